package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/runtime/pause"
)

// benchConflist is the pod network of both runtimes in the comparison: the reference plugins'
// bridge with host-local IPAM and portmap. ingot runs this list natively; containerd runs the
// plugin binaries. No ipMasq: the reference bridge plugin needs an iptables or nft binary for it,
// which a fresh machine does not have; pods reach nothing outside in the benchmark anyway.
const benchConflist = `{"cniVersion": "1.0.0", "name": "benchnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "@DIR@/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}]}`

// containerdPause is the sandbox image containerd's CRI plugin uses by default. The comparison
// serves ingot's own tiny pause program under it, so containerd's pods pay no more for their
// pause than ingot's do.
const containerdPause = "registry.k8s.io/pause:3.10.2"

// pullRef is the image both runtimes pull in the throughput comparison.
const pullRef = "registry.k8s.io/ingot-bench/pull:4-layers"

// compareSettle is how long memory is left to settle before it is read, for both runtimes, idle
// and with pods.
const compareSettle = 2 * time.Second

// side is one runtime in the comparison, reached the same way: its CRI socket.
type side struct {
	name   string
	socket string
	logDir string
	daemon int          // the daemon's pid
	shims  func() []int // the pids of its shims
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
}

// compareResult is what one side measured.
type compareResult struct {
	start, down, startPar, downPar []time.Duration
	pulls                          []time.Duration
	idlePSS, grownPSS              int // KiB
	mem                            podMemory
	kernel                         cgroupMemory
}

// BenchmarkCompare runs the same workloads against ingot's runtime and containerd (with runc),
// both on the host in private namespaces, through one CRI client, alternating between them, and
// prints a table of ratios ingot / containerd with the absolute figures beside them:
//
//   - pod start (RunPodSandbox + CreateContainer + StartContainer), b.N pods one at a time and
//     b.N ten at a time, median and p95;
//
//   - teardown (StopPodSandbox + RemovePodSandbox), median and p95;
//
//   - pull and unpack of a 4-layer image of over 100 MB from the same registry (throughput);
//
//   - memory in PSS after the same settle: the idle daemon, and what each running pod adds
//     (daemon growth + shims + pause processes, the shims found by walking the process table,
//     their number asserted), with the kernel's side (the pods' cgroups' memory and slab) beside.
//
//     make bench   (or: go test -run '^$' -bench Compare -benchtime 50x ./runtime/integration)
func BenchmarkCompare(b *testing.B) {
	if b.N < 10 {
		// The framework's probe run (b.N = 1): starting two daemons and pulling 100 MB for it
		// would only double the benchmark's time.
		return
	}
	freshCopy(b) // a tmpfs copy; StartContainerd copies its programs the same way
	addr := Registry(b)
	ctx := context.Background()
	pullSize := pushCompareImages(b, ctx, addr)

	ing := StartWith(b, func(r *Runtime) {
		os.WriteFile(filepath.Join(r.CNIConfDir, "10-bench.conflist"), []byte(strings.ReplaceAll(benchConflist, "@DIR@", r.Dir)), 0o644)
		r.InNodeNetNS = true
		r.RegistryAddr = ForwardRegistry(b, r.NodeNetNS(), addr)
	})
	ctd := StartContainerd(b, benchConflist)
	sides := []*side{
		{name: "ingot", socket: ing.Socket, logDir: ing.Dir, daemon: ing.cmd.Process.Pid, shims: func() []int { return ingotShims(ing.cmd.Process.Pid) }},
		{name: "containerd", socket: ctd.Socket, logDir: ctd.Dir, daemon: ctd.Pid(), shims: ctd.Shims},
	}
	res := map[string]*compareResult{}
	for _, s := range sides {
		conn, err := grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		s.rt, s.img = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
		for _, ref := range []string{busybox, containerdPause} {
			if _, err := s.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
				b.Fatalf("%s: pull %s: %v", s.name, ref, err)
			}
		}
		res[s.name] = &compareResult{}
	}
	// alternate runs f for both sides, the first side first on even i and second on odd i.
	alternate := func(i int, f func(s *side, r *compareResult)) {
		order := sides
		if i%2 == 1 {
			order = []*side{sides[1], sides[0]}
		}
		for _, s := range order {
			f(s, res[s.name])
		}
	}

	time.Sleep(compareSettle)
	for _, s := range sides {
		res[s.name].idlePSS = pssKiB(s.daemon)
	}
	ids := map[string][]string{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		alternate(i, func(s *side, r *compareResult) {
			d, id, err := startPod(ctx, s.rt, s.logDir, fmt.Sprint("s", i))
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			r.start = append(r.start, d)
			ids[s.name] = append(ids[s.name], id)
		})
	}
	b.StopTimer()
	time.Sleep(compareSettle)
	for _, s := range sides {
		r := res[s.name]
		r.grownPSS = pssKiB(s.daemon) - r.idlePSS
		r.mem, r.kernel = shimMemory(s.shims())
		if r.mem.shims != b.N || r.mem.pauses != b.N {
			b.Fatalf("%s: found %d shims and %d pause processes, want %d of each", s.name, r.mem.shims, r.mem.pauses, b.N)
		}
	}
	for i := 0; i < b.N; i++ {
		alternate(i, func(s *side, r *compareResult) {
			d, err := stopPod(ctx, s.rt, ids[s.name][i])
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			r.down = append(r.down, d)
		})
	}

	const parallel = 10
	for lo := 0; lo < b.N; lo += parallel {
		batch := lo / parallel
		alternate(batch, func(s *side, r *compareResult) {
			n := min(parallel, b.N-lo)
			ids := make([]string, n)
			up, err := together(n, func(j int) (time.Duration, error) {
				d, id, err := startPod(ctx, s.rt, s.logDir, fmt.Sprint("p", lo+j))
				ids[j] = id
				return d, err
			})
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			down, err := together(n, func(j int) (time.Duration, error) { return stopPod(ctx, s.rt, ids[j]) })
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			r.startPar, r.downPar = append(r.startPar, up...), append(r.downPar, down...)
		})
	}

	for i := 0; i < 3; i++ {
		alternate(i, func(s *side, r *compareResult) {
			start := time.Now()
			if _, err := s.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: pullRef}}); err != nil {
				b.Fatalf("%s: pull %s: %v", s.name, pullRef, err)
			}
			r.pulls = append(r.pulls, time.Since(start))
			if _, err := s.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: pullRef}}); err != nil {
				b.Fatalf("%s: remove %s: %v", s.name, pullRef, err)
			}
		})
	}

	rows := compareRows(res["ingot"], res["containerd"], b.N, pullSize)
	for _, row := range rows {
		b.ReportMetric(row.ingot, "ingot-"+row.metric)
		b.ReportMetric(row.containerd, "containerd-"+row.metric)
	}
	printCompare(os.Stdout, rows, b.N, pullSize)
}

// compareRow is one line of the table: the same metric for both runtimes.
type compareRow struct {
	what, metric      string
	ingot, containerd float64
	lowerIsBetter     bool
}

func compareRows(ing, ctd *compareResult, pods int, pullSize int64) []compareRow {
	perPod := func(r *compareResult) float64 {
		return float64(r.grownPSS+r.mem.shimPSS+r.mem.pausePSS) / float64(pods)
	}
	mbps := func(r *compareResult) float64 {
		return float64(pullSize) / (1 << 20) / median(r.pulls).Seconds()
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var rows []compareRow
	add := func(what, metric string, f func(r *compareResult) float64, lower bool) {
		rows = append(rows, compareRow{what, metric, f(ing), f(ctd), lower})
	}
	add("pod start, one at a time, median (ms)", "start-ms-median", func(r *compareResult) float64 { return ms(median(r.start)) }, true)
	add("pod start, one at a time, p95 (ms)", "start-ms-p95", func(r *compareResult) float64 { return ms(p95(r.start)) }, true)
	add("pod start, 10 at once, median (ms)", "start10-ms-median", func(r *compareResult) float64 { return ms(median(r.startPar)) }, true)
	add("pod start, 10 at once, p95 (ms)", "start10-ms-p95", func(r *compareResult) float64 { return ms(p95(r.startPar)) }, true)
	add("teardown, one at a time, median (ms)", "teardown-ms-median", func(r *compareResult) float64 { return ms(median(r.down)) }, true)
	add("teardown, one at a time, p95 (ms)", "teardown-ms-p95", func(r *compareResult) float64 { return ms(p95(r.down)) }, true)
	add("teardown, 10 at once, median (ms)", "teardown10-ms-median", func(r *compareResult) float64 { return ms(median(r.downPar)) }, true)
	add("teardown, 10 at once, p95 (ms)", "teardown10-ms-p95", func(r *compareResult) float64 { return ms(p95(r.downPar)) }, true)
	add("pull and unpack, median of 3 (MiB/s)", "pull-MiB/s", mbps, false)
	add("daemon idle (KiB PSS)", "KiB-idle-pss", func(r *compareResult) float64 { return float64(r.idlePSS) }, true)
	add("added per running pod (KiB PSS)", "KiB-pss/pod", perPod, true)
	add("  of it daemon growth (less where shims share its binary)", "KiB-daemon-pss/pod", func(r *compareResult) float64 { return float64(r.grownPSS) / float64(pods) }, true)
	add("  of it shim", "KiB-shim-pss/pod", func(r *compareResult) float64 { return float64(r.mem.shimPSS) / float64(pods) }, true)
	add("  of it pause", "KiB-pause-pss/pod", func(r *compareResult) float64 { return float64(r.mem.pausePSS) / float64(pods) }, true)
	add("pods' memory cgroups, charged per pod (KiB)", "KiB-cgroup/pod", func(r *compareResult) float64 { return float64(r.kernel.charged) / 1024 / float64(pods) }, true)
	add("  of it kernel memory (slab, stacks, page tables)", "KiB-cgroup-kernel/pod", func(r *compareResult) float64 { return float64(r.kernel.kernel) / 1024 / float64(pods) }, true)
	return rows
}

func printCompare(w io.Writer, rows []compareRow, pods int, pullSize int64) {
	fmt.Fprintf(w, "\ningot vs containerd %s + runc %s, %d pods, %s/%s, pull of %.1f MiB (compressed)\n",
		bundle.ContainerdVersion, bundle.RuncVersion, pods, runtime.GOOS, runtime.GOARCH, float64(pullSize)/(1<<20))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tingot\tcontainerd\tingot/containerd\t")
	for _, r := range rows {
		ratio := "-"
		if r.containerd != 0 {
			ratio = strconv.FormatFloat(r.ingot/r.containerd, 'f', 2, 64) + "×"
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t\n", r.what, r.ingot, r.containerd, ratio)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// together runs f for j in [0, n) at once and returns each one's latency.
func together(n int, f func(j int) (time.Duration, error)) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for j := range n {
		wg.Add(1)
		go func() { defer wg.Done(); lat[j], errs[j] = f(j) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return lat, nil
}

func median(d []time.Duration) time.Duration { return quantile(d, 50) }
func p95(d []time.Duration) time.Duration    { return quantile(d, 95) }

// quantile is the q-th percentile by the nearest-rank rule used by reportLatency.
func quantile(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)*q/100, len(s)-1)]
}

// pushCompareImages pushes to the test registry the pause image containerd's CRI plugin uses by
// default (ingot's own pause program) and the image both runtimes pull, and returns the size of
// that image's compressed layers.
func pushCompareImages(b *testing.B, ctx context.Context, addr string) int64 {
	b.Helper()
	bin, err := pause.Binary(runtime.GOARCH)
	if err != nil {
		b.Fatal(err)
	}
	pauseLayer, err := layerOf([]tarFile{{"pause", bin, 0o755}})
	if err != nil {
		b.Fatal(err)
	}
	img, err := imageOf([]v1.Layer{pauseLayer}, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535", WorkingDir: "/"})
	if err != nil {
		b.Fatal(err)
	}
	pushTo(b, ctx, addr, containerdPause, img)

	var layers []v1.Layer
	var size int64
	for i := range 4 {
		l, err := layerOf(bulkFiles(i))
		if err != nil {
			b.Fatal(err)
		}
		n, err := l.Size()
		if err != nil {
			b.Fatal(err)
		}
		size += n
		layers = append(layers, l)
	}
	if size < 100<<20 {
		b.Fatalf("the pull image is %d bytes compressed, want at least 100 MiB", size)
	}
	img, err = imageOf(layers, v1.Config{Cmd: []string{"/bin/sh"}})
	if err != nil {
		b.Fatal(err)
	}
	pushTo(b, ctx, addr, pullRef, img)
	return size
}

type tarFile struct {
	name string
	data []byte
	mode int64
}

// bulkFiles is layer i of the pull image: 1500 files of 1–60 KiB under their own directories,
// two thirds of each file random (incompressible) and a third text, about 45 MB a layer. Seeded,
// so every run pulls the same bytes.
func bulkFiles(layer int) []tarFile {
	rng := rand.New(rand.NewChaCha8([32]byte{byte(layer), 'i', 'n', 'g', 'o', 't'}))
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog; "), 1500)
	var files []tarFile
	for f := range 1500 {
		n := 1024 + rng.IntN(60*1024)
		data := make([]byte, n)
		rnd := n * 2 / 3
		for j := 0; j < rnd; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < rnd; k++ {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		copy(data[rnd:], text)
		files = append(files, tarFile{fmt.Sprintf("usr/share/bench%d/d%02d/f%04d", layer, f%50, f), data, 0o644})
	}
	return files
}

// layerOf is a gzip-compressed layer of files (directories are added before their files).
func layerOf(files []tarFile) (v1.Layer, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	seen := map[string]bool{}
	for _, f := range files {
		var dirs []string
		for d := filepath.Dir(f.name); d != "." && !seen[d]; d = filepath.Dir(d) {
			seen[d] = true
			dirs = append(dirs, d)
		}
		slices.Reverse(dirs)
		for _, d := range dirs {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

func imageOf(layers []v1.Layer, cfg v1.Config) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Config = runtime.GOARCH, "linux", cfg
	return mutate.ConfigFile(img, cf)
}

// pushTo puts img where a runtime whose mirrors point at the test registry finds ref.
func pushTo(b *testing.B, ctx context.Context, addr, ref string, img v1.Image) {
	b.Helper()
	repo, id, err := testimages.MirrorPath(ref)
	if err != nil {
		b.Fatal(err)
	}
	dst, err := name.ParseReference(addr+"/"+repo+":"+id, name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(dst, img, remote.WithContext(ctx)); err != nil {
		b.Fatalf("push %s to the test registry: %v", ref, err)
	}
}
