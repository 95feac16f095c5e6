package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/runtime/oci"
)

// pushEscapeImage pushes busybox plus a layer holding /etc/evil -> /../../../tmp/<unique>, a
// symlink that leaves the rootfs if a runtime follows it on the host, and returns its name as
// the runtime pulls it and the host directory it points at.
func pushEscapeImage(t *testing.T, addr string) (ref, hostTarget string) {
	t.Helper()
	var rnd [6]byte
	rand.Read(rnd[:])
	hostTarget = "/tmp/ingot-hostile-" + hex.EncodeToString(rnd[:])
	base, err := name.ParseReference(addr+"/e2e-test-images/busybox:1.29-2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(base, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatalf("busybox from the test registry: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "etc/evil", Typeflag: tar.TypeSymlink, Linkname: "/../../../" + strings.TrimPrefix(hostTarget, "/"), Mode: 0o777})
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	tag := hex.EncodeToString(rnd[:])
	dst, err := name.ParseReference(addr+"/e2e-test-images/ingot-hostile-escape:"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatalf("push the escape image: %v", err)
	}
	return "registry.k8s.io/e2e-test-images/ingot-hostile-escape:" + tag, hostTarget
}

// entries lists a directory's names; a missing directory has none.
func entries(dir string) []string {
	des, _ := os.ReadDir(dir)
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// TestHostileRequests sends hostile RunPodSandbox and CreateContainer requests through the real
// CRI with a Go client (crictl cannot craft them) and checks that each gets InvalidArgument
// naming the field and leaves no pod or container record, directory, log or host path behind;
// then that a mount target reaching out of the rootfs through a symlink in the image lands
// inside the rootfs, as runc resolves it; and that oom_score_adj is the kubelet's where the
// runtime may set it.
func TestHostileRequests(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	escapeRef, hostTarget := pushEscapeImage(t, Registry(t))
	t.Cleanup(func() { os.RemoveAll(hostTarget) })
	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, ref := range []string{busybox, escapeRef} {
		if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
	}
	refused := func(t *testing.T, err error, want string) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), want) {
			t.Fatalf("got %v, want InvalidArgument containing %q", err, want)
		}
	}
	nothingLeft := func(t *testing.T, podsWanted int) {
		t.Helper()
		pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.GetItems()) != podsWanted || len(ctrs.GetContainers()) != 0 {
			t.Errorf("%d pods and %d containers listed, want %d and 0", len(pods.GetItems()), len(ctrs.GetContainers()), podsWanted)
		}
		for _, d := range []string{"root/pods", "state/pods", "state/podns", "state/netns"} {
			if n := entries(filepath.Join(r.Dir, d)); len(n) != podsWanted {
				t.Errorf("%s holds %v, want %d entries", d, n, podsWanted)
			}
		}
		if n := entries(filepath.Join(r.Dir, "root/containers")); len(n) != 0 {
			t.Errorf("root/containers holds %v", n)
		}
	}
	pod := func(name string) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: name + "-uid"},
			LogDirectory: filepath.Join(r.Dir, "logs", name),
			Linux:        &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}}},
		}
	}
	sysctl := func(k string) func(*runtimeapi.PodSandboxConfig) {
		return func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{k: "1"} }
	}
	t.Run("pods", func(t *testing.T) {
		for i, tc := range []struct {
			name string
			edit func(*runtimeapi.PodSandboxConfig)
			want string
		}{
			{"name with a slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a/b" }, `pod sandbox name "a/b"`},
			{"name with dot-dot", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = ".." }, `pod sandbox name ".."`},
			{"namespace with a slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "../kube-system" }, `pod sandbox namespace "../kube-system"`},
			{"annotations over 256 KiB", func(c *runtimeapi.PodSandboxConfig) {
				c.Annotations = map[string]string{"big": strings.Repeat("x", 256<<10)}
			}, "annotations are 262147 bytes, more than the 262144 allowed"},
			{"node-wide sysctl", sysctl("kernel.panic"), "sysctl kernel.panic is not namespaced"},
			{"net sysctl with host network", func(c *runtimeapi.PodSandboxConfig) {
				sysctl("net.ipv4.ip_forward")(c)
				c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
			}, "sysctl net.ipv4.ip_forward: the pod shares the node's network namespace"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := pod("hostile-" + strconv.Itoa(i))
				logDir := cfg.LogDirectory
				tc.edit(cfg)
				_, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
				refused(t, err, tc.want)
				nothingLeft(t, 0)
				if _, err := os.Stat(logDir); err == nil {
					t.Errorf("the refused pod's log directory %s was created", logDir)
				}
			})
		}
	})

	good := pod("good")
	run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: good})
	if err != nil {
		t.Fatalf("a harmless pod: %v\n%s", err, tail(r.Log(), 3000))
	}
	podID := run.GetPodSandboxId()
	ctr := func(name string) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name}, Image: &runtimeapi.ImageSpec{Image: busybox},
			Command: []string{"sleep", "300"}, LogPath: name + ".log",
			Mounts: []*runtimeapi.Mount{{HostPath: filepath.Join(r.Dir, "hostpaths", name), ContainerPath: "/harmless"}},
			Linux:  &runtimeapi.LinuxContainerConfig{},
		}
	}
	t.Run("containers", func(t *testing.T) {
		for i, tc := range []struct {
			name string
			edit func(*runtimeapi.ContainerConfig)
			want string
		}{
			{"relative mount target", func(c *runtimeapi.ContainerConfig) {
				c.Mounts = append(c.Mounts, &runtimeapi.Mount{HostPath: filepath.Join(r.Dir, "hostpaths", "rel"), ContainerPath: "etc/x"})
			}, `mount destination "etc/x" is not absolute`},
			{"name with a slash", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "../../x" }, `container name "../../x"`},
			{"log path outside the pod's log directory", func(c *runtimeapi.ContainerConfig) { c.LogPath = "../escaped.log" },
				`log_path "../escaped.log" escapes log_directory`},
			{"annotations over 256 KiB", func(c *runtimeapi.ContainerConfig) {
				c.Annotations = map[string]string{"big": strings.Repeat("x", 256<<10)}
			}, "annotations are 262147 bytes, more than the 262144 allowed"},
			{"device outside /dev", func(c *runtimeapi.ContainerConfig) {
				c.Devices = []*runtimeapi.Device{{HostPath: "/etc/shadow", ContainerPath: "/dev/shadow", Permissions: "r"}}
			}, "device /etc/shadow: host path is outside /dev"},
			{"device through a symlink out of /dev", func(c *runtimeapi.ContainerConfig) {
				c.Devices = []*runtimeapi.Device{{HostPath: "/dev/fd/../status", ContainerPath: "/dev/x", Permissions: "r"}}
			}, "device /dev/fd/../status: a symlink leads outside /dev"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := ctr("hostile-" + strconv.Itoa(i))
				tc.edit(cfg)
				_, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: good})
				refused(t, err, tc.want)
				nothingLeft(t, 1)
				if n := entries(filepath.Join(r.Dir, "hostpaths")); len(n) != 0 {
					t.Errorf("the refused request created host paths %v", n)
				}
				if _, err := os.Stat(filepath.Join(r.Dir, "logs", "escaped.log")); err == nil {
					t.Error("the refused request created a log file outside the pod's log directory")
				}
			})
		}
	})

	t.Run("mount through a symlink in the image", func(t *testing.T) {
		src := filepath.Join(r.Dir, "escape-src")
		if err := os.WriteFile(src, []byte("from the host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := ctr("escape")
		cfg.Image = &runtimeapi.ImageSpec{Image: escapeRef}
		cfg.Mounts = []*runtimeapi.Mount{{HostPath: src, ContainerPath: "/etc/evil/file", Readonly: true}}
		// The kubelet's value for a Guaranteed pod.
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: -997}
		cfg.Command = []string{"sh", "-c", "cat /proc/self/oom_score_adj > /tmp/oom; exec sleep 300"}
		c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: good})
		if err != nil {
			t.Fatalf("create: %v\n%s", err, tail(r.Log(), 3000))
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.GetContainerId()}); err != nil {
			t.Fatalf("start: %v\n%s", err, tail(r.Log(), 3000))
		}
		if _, err := os.Lstat(hostTarget); err == nil {
			t.Fatalf("the bind mount reached the host: %s exists", hostTarget)
		}
		exec := func(cmd ...string) string {
			res, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.GetContainerId(), Cmd: cmd, Timeout: 30})
			if err != nil || res.GetExitCode() != 0 {
				t.Fatalf("exec %v: %v, exit %d: %s%s", cmd, err, res.GetExitCode(), res.GetStdout(), res.GetStderr())
			}
			return strings.TrimSpace(string(res.GetStdout()))
		}
		// Inside the container the symlink resolves within its root: the file is at the link's
		// target there, and the mount point was made in the container's own layer.
		if got := exec("cat", hostTarget+"/file"); got != "from the host" {
			t.Errorf("%s/file in the container: %q, want the host file's content", hostTarget, got)
		}
		if got := exec("cat", "/etc/evil/file"); got != "from the host" {
			t.Errorf("/etc/evil/file in the container: %q", got)
		}
		upper := filepath.Join(r.Dir, "root", "containers", c.GetContainerId(), "upper", strings.TrimPrefix(hostTarget, "/"), "file")
		if _, err := os.Lstat(upper); err != nil {
			t.Errorf("the mount point is not in the container's layer: %v", err)
		}

		oom := oci.DetectOOMLimit() // the daemon runs with the test's capabilities and oom_score_adj
		want := -997
		if !oom.CanLower {
			want = oom.Own
			if !strings.Contains(r.Log(), "the runtime lacks CAP_SYS_RESOURCE") {
				t.Errorf("no warning that oom_score_adj is clamped in the daemon log:\n%s", tail(r.Log(), 2000))
			}
		}
		if got := exec("cat", "/tmp/oom"); got != strconv.Itoa(want) {
			t.Errorf("oom_score_adj %s, want %d (runtime may lower it: %v)", got, want, oom.CanLower)
		}
	})
}
