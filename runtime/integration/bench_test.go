package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

// BenchmarkPodStart measures, against the real daemon, the latency from RunPodSandbox to a
// running container (RunPodSandbox + CreateContainer + StartContainer over gRPC, as the kubelet
// calls them) and reports its median and p95, the daemon's idle footprint, and the memory each
// running pod adds, all in PSS measured after the same settle: the daemon's growth plus the pod's
// shim and pause processes, and those two apart.
//
//	make bench   (or: go test -run '^$' -bench PodStart ./runtime/integration)
func BenchmarkPodStart(b *testing.B) {
	freshCopy(b)
	r := Start(b)
	r.MustCrictl("pull", busybox)
	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx := context.Background()
	daemonPid := r.cmd.Process.Pid
	time.Sleep(settle)
	idleRSS, idlePSS := rssKiB(daemonPid), pssKiB(daemonPid)

	var lat []time.Duration
	var pods []string
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, id, err := startPod(ctx, rt, r.Dir, fmt.Sprint(i))
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, d)
		pods = append(pods, id)
	}
	b.StopTimer()
	reportLatency(b, lat, "")
	b.ReportMetric(float64(idleRSS), "KiB-idle-rss")
	b.ReportMetric(float64(idlePSS), "KiB-idle-pss")
	if n := float64(len(pods)); n > 0 {
		time.Sleep(settle)
		grown := pssKiB(daemonPid) - idlePSS
		m, _ := shimMemory(ingotShims(daemonPid))
		if m.shims != len(pods) || m.pauses != len(pods) {
			b.Fatalf("found %d shims and %d pause processes under the daemon, want %d of each", m.shims, m.pauses, len(pods))
		}
		b.ReportMetric(float64(grown+m.shimPSS+m.pausePSS)/n, "KiB-pss/pod")
		b.ReportMetric(float64(m.shimPSS)/n, "KiB-shim-pss/pod")
		b.ReportMetric(float64(m.pausePSS)/n, "KiB-pause-pss/pod")
	}
	var down []time.Duration
	for _, id := range pods {
		d, err := stopPod(ctx, rt, id)
		if err != nil {
			b.Fatal(err)
		}
		down = append(down, d)
	}
	reportLatency(b, down, "teardown-")
}

// BenchmarkPodStartConcurrent starts pods ten at a time, as a kubelet does when a node gets many
// at once, and reports the median and p95 of each pod's start (RunPodSandbox to a running
// container) and of each pod's teardown, also ten at a time.
func BenchmarkPodStartConcurrent(b *testing.B) {
	const parallel = 10
	freshCopy(b)
	r := Start(b)
	r.MustCrictl("pull", busybox)
	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx := context.Background()
	time.Sleep(settle)
	// inBatches runs f for items [0, n) ten at a time and returns each one's latency.
	inBatches := func(n int, f func(i int) (time.Duration, error)) []time.Duration {
		lat := make([]time.Duration, n)
		for lo := 0; lo < n; lo += parallel {
			var wg sync.WaitGroup
			errs := make(chan error, parallel)
			for i := lo; i < min(lo+parallel, n); i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := f(i)
					if err != nil {
						errs <- err
					}
					lat[i] = d
				}()
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return lat
	}
	pods := make([]string, b.N)
	b.ResetTimer()
	up := inBatches(b.N, func(i int) (time.Duration, error) {
		d, id, err := startPod(ctx, rt, r.Dir, fmt.Sprint("c", i))
		pods[i] = id
		return d, err
	})
	b.StopTimer()
	reportLatency(b, up, "")
	down := inBatches(b.N, func(i int) (time.Duration, error) { return stopPod(ctx, rt, pods[i]) })
	reportLatency(b, down, "teardown-")
}

// startPod runs a pod with one busybox container sleeping, the calls a kubelet makes, and returns
// the time from RunPodSandbox until StartContainer has returned.
func startPod(ctx context.Context, rt runtimeapi.RuntimeServiceClient, dir, name string) (time.Duration, string, error) {
	pcfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "bench-" + name, Namespace: "bench", Uid: "bench-uid-" + name},
		LogDirectory: filepath.Join(dir, "logs", name),
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
	ccfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
		Image:    &runtimeapi.ImageSpec{Image: busybox},
		Command:  []string{"/bin/sleep", "3600"},
		LogPath:  "sleep.log",
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
	start := time.Now()
	pr, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pcfg})
	if err != nil {
		return 0, "", fmt.Errorf("pod %s: RunPodSandbox: %w", name, err)
	}
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pr.PodSandboxId, Config: ccfg, SandboxConfig: pcfg})
	if err != nil {
		return 0, pr.PodSandboxId, fmt.Errorf("pod %s: CreateContainer: %w", name, err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return 0, pr.PodSandboxId, fmt.Errorf("pod %s: StartContainer: %w", name, err)
	}
	return time.Since(start), pr.PodSandboxId, nil
}

// stopPod tears a pod down as the kubelet does (StopPodSandbox, then RemovePodSandbox) and
// returns how long that took.
func stopPod(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string) (time.Duration, error) {
	start := time.Now()
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return 0, fmt.Errorf("pod %s: StopPodSandbox: %w", id, err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return 0, fmt.Errorf("pod %s: RemovePodSandbox: %w", id, err)
	}
	return time.Since(start), nil
}

// reportLatency reports the median and p95 of lat in milliseconds, as <prefix>ms-median and
// <prefix>ms-p95.
func reportLatency(b *testing.B, lat []time.Duration, prefix string) {
	if len(lat) == 0 {
		return
	}
	lat = slices.Clone(lat)
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, prefix+"ms-median")
	b.ReportMetric(float64(lat[(len(lat)*95)/100].Microseconds())/1000, prefix+"ms-p95")
}

// freshCopy points INGOT_BIN at a copy of the node binary on a tmpfs of its own (see
// ProgramDir), where a node keeps it too.
func freshCopy(b *testing.B) {
	src := NodeBinary(b)
	dir := ProgramDir(b)
	copyFile(b, src, filepath.Join(dir, filepath.Base(src)))
	b.Setenv("INGOT_BIN", dir)
}

// settle is how long memory is left to settle before it is read, the same before and after pods.
const settle = 500 * time.Millisecond

// BenchmarkRunPodSandbox compares RunPodSandbox latency with the built-in pod network (namespace,
// veth on the bridge, address, NAT table) against a hostNetwork pod (no network work).
func BenchmarkRunPodSandbox(b *testing.B) {
	b.Run("builtin", func(b *testing.B) { benchRunPodSandbox(b, Start(b), true) })
	// The same bridge + host-local network through the CNI reference plugins' binaries (tuning in
	// the list makes ingot hand the whole list to libcni).
	b.Run("reference-plugins", func(b *testing.B) {
		r := StartWith(b, func(r *Runtime) {
			bins, err := bundle.CNIPlugins(context.Background(), cachedir.Default(), runtime.GOARCH)
			if err != nil {
				testgate.Skip(b, "cannot build the CNI reference plugins: "+err.Error())
			}
			os.MkdirAll(r.CNIBinDir, 0o755)
			for _, bin := range bins {
				data, _ := os.ReadFile(bin)
				os.WriteFile(filepath.Join(r.CNIBinDir, filepath.Base(bin)), data, 0o755)
			}
			os.WriteFile(filepath.Join(r.CNIConfDir, "10-ref.conflist"), []byte(`{"cniVersion": "1.0.0", "name": "refnet",
			  "plugins": [{"type": "bridge", "bridge": "cni1", "isGateway": true,
			    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
			    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0"}}]}`), 0o644)
			r.InNodeNetNS = true
		})
		benchRunPodSandbox(b, r, false)
	})
}

func benchRunPodSandbox(b *testing.B, r *Runtime, withHostnet bool) {
	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx := context.Background()
	for _, mode := range []struct {
		name string
		ns   runtimeapi.NamespaceMode
	}{{"podnet", runtimeapi.NamespaceMode_POD}, {"hostnet", runtimeapi.NamespaceMode_NODE}} {
		if mode.ns == runtimeapi.NamespaceMode_NODE && !withHostnet {
			continue
		}
		b.Run(mode.name, func(b *testing.B) {
			var lat []time.Duration
			var pods []string
			for i := 0; i < b.N; i++ {
				cfg := &runtimeapi.PodSandboxConfig{
					Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("%s-%d", mode.name, i), Namespace: "bench", Uid: fmt.Sprintf("%s-uid-%d", mode.name, i)},
					Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
						NamespaceOptions: &runtimeapi.NamespaceOption{Network: mode.ns}}},
				}
				start := time.Now()
				resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				pods = append(pods, resp.PodSandboxId)
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-median")
			b.ReportMetric(float64(lat[(len(lat)*95)/100].Microseconds())/1000, "ms-p95")
			for _, id := range pods {
				rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
				rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
			}
		})
	}
}
