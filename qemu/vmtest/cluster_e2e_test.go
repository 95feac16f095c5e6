package vmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/profiles"
)

// workerWithMirrors is the built-in worker profile with the test registry as every catalog
// registry's mirror (as devWithMirrors does for the dev profile).
func workerWithMirrors(t testing.TB) []byte {
	t.Helper()
	_, raw, err := profiles.Builtin("worker")
	if err != nil {
		t.Fatal(err)
	}
	const empty = "\nconfig = \"\"\n"
	s := string(raw)
	if !strings.Contains(s, empty) {
		t.Fatalf("the worker profile no longer has %q", empty)
	}
	return []byte(strings.Replace(s, empty, "\nconfig = '''\nversion = 2\n\n"+testimages.MirrorsTOML(guestRegistry)+"'''\n", 1))
}

// e2e is one run of `ingot cluster up --workers 1` and what the checks need of it.
type e2e struct {
	ctx     context.Context
	state   string
	ingot   string
	kubectl string
	node    string
}

// run runs kubectl as the cluster admin and returns its standard output.
func (e *e2e) run(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, e.kubectl, args...)
	c.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(e.state, cluster.FileAdminConfig))
	c.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (e *e2e) must(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := e.run(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonpath is kubectl get's -o jsonpath output.
func (e *e2e) jsonpath(obj, path string, ns ...string) string {
	args := []string{"get", obj, "-o", "jsonpath=" + path}
	if len(ns) > 0 {
		args = append(args, "-n", ns[0])
	}
	out, _ := e.run("", args...)
	return out
}

// waitFor polls cond every 2 s; on timeout the test fails with what the node's kubelet and the
// pods say.
func (e *e2e) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	poll(t, e.ctx, what, timeout, cond, e.diagnose)
	return time.Since(start).Round(100 * time.Millisecond)
}

func (e *e2e) diagnose() string {
	pods, _ := e.run("", "get", "pods", "-A", "-o", "wide")
	events, _ := e.run("", "get", "events", "-A", "--sort-by=.lastTimestamp")
	console, _ := os.ReadFile(filepath.Join(e.state, "logs", e.node+".console"))
	lines := strings.Split(string(console), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return "pods:\n" + pods + "\nevents:\n" + lastLines(events, 30) + "\nconsole:\n" + strings.Join(lines, "\n")
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (e *e2e) podReady(ns, name string) bool {
	return e.jsonpath("pod/"+name, `{.status.conditions[?(@.type=="Ready")].status}`, ns) == "True"
}

// TestClusterE2E is `make e2e-cluster`: `ingot cluster up --workers 1` boots a worker image (the
// built-in worker profile, the test registry as its mirror) that joins a control plane on the
// host, and real kubectl checks what a cluster user relies on: node info, a pod by nodeName with
// probes, logs, exec and port-forward through the API server, kube-proxy as a static pod
// serving a ClusterIP Service, the replacement of pods after a reboot, and a deleted pod leaving
// nothing on the node. It runs with INGOT_CLUSTER_TEST=1 or under CI=true, on INGOT_E2E_ARCH
// (default amd64). It replaces the earlier TestKubeletJoinsInVM, whose node-joins-and-runs-a-pod
// checks it covers with the real `ingot cluster up --workers`.
func TestClusterE2E(t *testing.T) {
	if os.Getenv("INGOT_CLUSTER_TEST") != "1" && !testgate.InCI() {
		t.Skip("set INGOT_CLUSTER_TEST=1 (make e2e-cluster) to build the control plane and run a cluster of ingot workers")
	}
	testgate.Short(t, "VM boots")
	archName := os.Getenv("INGOT_E2E_ARCH")
	if archName == "" {
		archName = "amd64"
	}
	RequireVM(t, archName)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()

	start := time.Now()
	imgs, err := testimages.Build(ctx, testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	kp, err := testimages.KubeProxy(ctx, testimages.Options{Arches: []string{archName}})
	if err != nil {
		t.Fatalf("build the kube-proxy image: %v", err)
	}
	imgs = append(imgs, kp)
	bins, err := cluster.Build(ctx, cachedir.Default())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	ingot := filepath.Join(tmp, "ingot")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", ingot, "../../cmd/ingot").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	profile := filepath.Join(tmp, "worker-e2e.toml")
	if err := os.WriteFile(profile, workerWithMirrors(t), 0o644); err != nil {
		t.Fatal(err)
	}
	image := Image(t, profile, archName)
	t.Logf("test images, kube-proxy image, control plane, kubectl and worker image ready in %s", time.Since(start).Round(time.Second))

	e := &e2e{ctx: ctx, state: filepath.Join(tmp, "cluster"), ingot: ingot, kubectl: bins.Kubectl, node: cluster.WorkerName(1)}
	up := exec.CommandContext(ctx, ingot, "cluster", "up", "--state", e.state, "--workers", "1", "--arch", archName,
		"--image", image, "--net", "restricted", "--guestfwd", registryFwd(t, imgs, guestRegistry), "--wait", "10m")
	upStart := time.Now()
	out, err := up.CombinedOutput()
	t.Cleanup(func() { cluster.Down(e.state, false) })
	if err != nil {
		t.Fatalf("ingot cluster up: %v\n%s\n%s", err, out, e.diagnose())
	}
	t.Logf("ingot cluster up --workers 1: node Ready %s after it started\n%s", time.Since(upStart).Round(time.Second), out)

	t.Run("node info", func(t *testing.T) {
		wide := e.must(t, "", "get", "node", e.node, "-o", "wide")
		t.Logf("\n%s", wide)
		var n struct {
			Status struct {
				NodeInfo struct{ OSImage, KernelVersion, ContainerRuntimeVersion string }
			}
		}
		if err := json.Unmarshal([]byte(e.must(t, "", "get", "node", e.node, "-o", "json")), &n); err != nil {
			t.Fatal(err)
		}
		info := n.Status.NodeInfo
		if !strings.HasPrefix(info.OSImage, "ingot") || !strings.HasPrefix(info.ContainerRuntimeVersion, "ingot://") || info.KernelVersion == "" {
			t.Errorf("node info %+v: want ingot's OS image, a kernel and ingot:// as the runtime", info)
		}
		for _, want := range []string{info.OSImage, info.KernelVersion, info.ContainerRuntimeVersion, "Ready"} {
			if !strings.Contains(wide, want) {
				t.Errorf("kubectl get node -o wide does not show %q", want)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("static pod kube-proxy", func(t *testing.T) {
		// The kubelet names a static pod's mirror NAME-NODE.
		took := e.waitFor(t, "kube-proxy Ready", 5*time.Minute, func() bool { return e.podReady("kube-system", "kube-proxy-"+e.node) })
		t.Logf("kube-proxy (a static pod from the node config) Ready %s after the node", took)
	})

	// web: the nginx stand-in bound by nodeName, with an exec liveness probe that counts its runs
	// and an httpGet readiness probe.
	const web = `apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: NODE
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/nginx:1.14-2
    ports: [{containerPort: 80}]
    livenessProbe:
      exec: {command: ["sh", "-c", "echo alive >>/tmp/liveness"]}
      periodSeconds: 2
      failureThreshold: 1
    readinessProbe:
      httpGet: {path: /, port: 80}
      periodSeconds: 2
`
	created := time.Now()
	e.must(t, strings.ReplaceAll(web, "NODE", e.node), "apply", "-f", "-")
	e.waitFor(t, "pod web Running", 5*time.Minute, func() bool {
		return e.jsonpath("pod/web", "{.status.phase}") == "Running"
	})
	running := time.Since(created).Round(100 * time.Millisecond)
	ready := e.waitFor(t, "pod web Ready (its readiness probe)", 2*time.Minute, func() bool { return e.podReady("default", "web") })
	t.Logf("pod web Running %s after it was created; Ready %s after that", running, ready)

	t.Run("probes", func(t *testing.T) {
		// Ready means the httpGet probe passed. The exec probe appends a line per run: after a
		// few periods there are several, and the container never restarted.
		var runs string
		e.waitFor(t, "three runs of the liveness probe", time.Minute, func() bool {
			out, err := e.run("", "exec", "web", "--", "sh", "-c", "wc -l </tmp/liveness")
			runs = strings.TrimSpace(out)
			n, _ := strconv.Atoi(runs)
			return err == nil && n >= 3
		})
		if rc := e.jsonpath("pod/web", "{.status.containerStatuses[0].restartCount}"); rc != "0" {
			t.Errorf("web restarted %s times: its liveness probe failed", rc)
		}
		t.Logf("liveness probe ran %s times; restarts 0", runs)
	})

	t.Run("logs exec port-forward", func(t *testing.T) {
		if out := e.must(t, "", "exec", "web", "--", "sh", "-c", "echo exec-$((6*7)) on $(hostname)"); strings.TrimSpace(out) != "exec-42 on web" {
			t.Errorf("kubectl exec: %q", out)
		}
		// kubectl port-forward through the API server and the kubelet to the pod's port 80.
		pctx, pcancel := context.WithTimeout(ctx, time.Minute)
		defer pcancel()
		pf := exec.CommandContext(pctx, e.kubectl, "port-forward", "pod/web", ":80")
		pf.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(e.state, cluster.FileAdminConfig))
		stdout, err := pf.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var pfErr strings.Builder
		pf.Stderr = &pfErr
		if err := pf.Start(); err != nil {
			t.Fatal(err)
		}
		defer pf.Wait()
		defer pcancel()
		re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 80`)
		var port string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port = m[1]
				break
			}
		}
		if port == "" {
			t.Fatalf("kubectl port-forward printed no local port: %s", pfErr.String())
		}
		go io.Copy(io.Discard, stdout)
		resp, err := (&http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}).Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			t.Fatalf("GET through kubectl port-forward: %v (%s)", err, pfErr.String())
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "Welcome to nginx") {
			t.Errorf("GET through kubectl port-forward: %s %q", resp.Status, body)
		}
	})

	// client: a second pod that reaches web through a ClusterIP Service (kube-proxy's rules), and
	// logs what it got.
	e.must(t, "", "expose", "pod", "web", "--name", "web", "--port", "8080", "--target-port", "80")
	svcIP := e.jsonpath("service/web", "{.spec.clusterIP}")
	if svcIP == "" {
		t.Fatal("service web has no ClusterIP")
	}
	client := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: %s
  containers:
  - name: client
    image: registry.k8s.io/e2e-test-images/busybox:1.29-2
    command: ["sh", "-c", "until timeout 5 wget -q -O /tmp/page http://%s:8080/; do sleep 1; done; grep -o 'Welcome to nginx' /tmp/page; echo SERVICE-OK; exec sleep 36000"]
`, e.node, svcIP)
	// timeout(1) rather than wget -T: the busybox wget of the test image segfaults with -T.
	t.Run("ClusterIP service from a second pod", func(t *testing.T) {
		e.must(t, client, "apply", "-f", "-")
		took := e.waitFor(t, "client's request to service web "+svcIP, 5*time.Minute, func() bool {
			out, _ := e.run("", "logs", "client")
			return strings.Contains(out, "Welcome to nginx\nSERVICE-OK")
		})
		t.Logf("client got web's page through ClusterIP %s:8080 (kubectl logs) %s after it was created", svcIP, took)
	})

	t.Run("reboot", func(t *testing.T) {
		bootID := e.jsonpath("node/"+e.node, "{.status.nodeInfo.bootID}")
		if bootID == "" {
			t.Fatal("the node has no bootID")
		}
		reset := time.Now()
		if out, err := exec.CommandContext(ctx, ingot, "cluster", "reboot", "--state", e.state, e.node).CombinedOutput(); err != nil {
			t.Fatalf("ingot cluster reboot: %v\n%s", err, out)
		}
		took := e.waitFor(t, "the node Ready after its reboot", 10*time.Minute, func() bool {
			return e.jsonpath("node/"+e.node, "{.status.nodeInfo.bootID}") != bootID &&
				e.jsonpath("node/"+e.node, `{.status.conditions[?(@.type=="Ready")].status}`) == "True"
		})
		t.Logf("node Ready again %s after the reset", took)
		// The kubelet replaces the pods bound to the node: new containers, started after the
		// reset, and the service answers again.
		replaced := func(pod string) bool {
			at, err := time.Parse(time.RFC3339, e.jsonpath("pod/"+pod, "{.status.containerStatuses[0].state.running.startedAt}"))
			return err == nil && at.After(reset.Add(-time.Second)) && e.podReady("default", pod)
		}
		podsBack := e.waitFor(t, "web and client replaced and Ready", 10*time.Minute, func() bool { return replaced("web") && replaced("client") })
		e.waitFor(t, "client's request after the reboot", 3*time.Minute, func() bool {
			out, _ := e.run("", "logs", "client")
			return strings.Contains(out, "SERVICE-OK")
		})
		t.Logf("web and client running again %s after the node was Ready", podsBack)
	})

	t.Run("deletion cleans the node", func(t *testing.T) {
		// inspect: a hostNetwork pod that sees, read-only, where the runtime keeps containers,
		// network namespaces and leases, and the cgroup tree.
		const inspect = `apiVersion: v1
kind: Pod
metadata:
  name: inspect
spec:
  nodeName: NODE
  hostNetwork: true
  containers:
  - name: inspect
    image: registry.k8s.io/e2e-test-images/busybox:1.29-2
    command: ["sleep", "36000"]
    volumeMounts:
    - {name: containers, mountPath: /host/containers, readOnly: true}
    - {name: netns, mountPath: /host/netns, readOnly: true}
    - {name: net, mountPath: /host/net, readOnly: true}
    - {name: cgroup, mountPath: /host/cgroup, readOnly: true}
  volumes:
  - {name: containers, hostPath: {path: /var/lib/ingot/containers}}
  - {name: netns, hostPath: {path: /run/ingot/netns}}
  - {name: net, hostPath: {path: /var/lib/ingot/net}}
  - {name: cgroup, hostPath: {path: /sys/fs/cgroup}}
`
		e.must(t, strings.ReplaceAll(inspect, "NODE", e.node), "apply", "-f", "-")
		e.waitFor(t, "pod inspect Running", 5*time.Minute, func() bool { return e.jsonpath("pod/inspect", "{.status.phase}") == "Running" })
		uid := e.jsonpath("pod/web", "{.metadata.uid}")
		ip := e.jsonpath("pod/web", "{.status.podIP}")
		cid := strings.TrimPrefix(e.jsonpath("pod/web", "{.status.containerStatuses[0].containerID}"), "ingot://")
		if uid == "" || ip == "" || cid == "" {
			t.Fatalf("pod web: uid %q, IP %q, container %q", uid, ip, cid)
		}
		// The lease view names the sandbox that holds the pod's address; its network namespace
		// is named after it. The cgroupfs driver names a pod's cgroup pod<UID>.
		probe := fmt.Sprintf(`sb=$(grep '^%s ' /host/net/leases | cut -d' ' -f2); echo "sandbox=$sb"; `+
			`test -e /host/containers/%s && echo container; test -n "$sb" && test -e /host/netns/$sb && echo netns; `+
			`find /host/cgroup/kubepods* -maxdepth 2 -type d -name 'pod%s' | grep -q . && echo cgroup; `+
			`grep -q '^%s ' /host/net/leases && echo lease; true`, ip, cid, uid, ip)
		before := e.must(t, "", "exec", "inspect", "--", "sh", "-c", probe)
		for _, want := range []string{"container", "netns", "cgroup", "lease"} {
			if !strings.Contains(before, "\n"+want+"\n") {
				t.Fatalf("before deletion the node should hold web's %s; the probe found:\n%s", want, before)
			}
		}
		sandbox := strings.TrimPrefix(strings.SplitN(before, "\n", 2)[0], "sandbox=")
		deleted := time.Now()
		e.must(t, "", "delete", "pod", "web", "--wait=true", "--timeout=3m")
		var after string
		e.waitFor(t, "web's container, netns, cgroup and lease gone from the node", 3*time.Minute, func() bool {
			out, err := e.run("", "exec", "inspect", "--", "sh", "-c",
				strings.Replace(probe, `sb=$(grep '^`+ip+` ' /host/net/leases | cut -d' ' -f2)`, "sb="+sandbox, 1))
			after = out
			return err == nil && strings.TrimSpace(after) == "sandbox="+sandbox
		})
		t.Logf("pod web deleted; container %s, sandbox %s (netns and lease %s) and cgroup pod%s gone %s after kubectl delete",
			cid, sandbox, ip, uid, time.Since(deleted).Round(time.Second))
	})
}

// poll calls cond every 2 s until it holds, failing the test with what diag says after timeout.
func poll(t *testing.T, ctx context.Context, what string, timeout time.Duration, cond func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out after %s waiting for %s; %s", timeout, what, diag())
		}
		time.Sleep(2 * time.Second)
	}
}
