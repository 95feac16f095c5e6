package vmtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggtarball "github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/init/statedisk"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/qemu"
)

// The state partition's filesystem as a node makes, checks and grows it (init/statedisk): made
// by mke2fs on the image's own 256 MiB partition and on one grown to 6.3 GiB, grown to 20 GiB
// after the disk is enlarged, and formatted again after a power cut during the first format.

const (
	// lazyinitTimeout is how long ext4lazyinit may take to zero a new /var's inode tables under
	// TCG (6.3 GiB: 100 MiB of inode tables).
	lazyinitTimeout = 8 * time.Minute
	grownDisk       = 6451 << 20 // 6.3 GiB
	enlargedDisk    = 20 << 30
)

// stateFS names the disk's state filesystem for e2fsprogs on the host: the image file with the
// partition's offset (e2fsprogs' unix I/O takes "?offset=").
func stateFS(t *testing.T, disk string) string {
	t.Helper()
	p, err := statedisk.FindPartition(disk, statedisk.Label)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s?offset=%d", disk, p.Start())
}

// fsckState runs the host's e2fsck -fn on the disk's state partition (offset into the image
// file) and fails on any finding. It returns e2fsck's summary line.
func fsckState(t *testing.T, disk string) string {
	t.Helper()
	fsck := testgate.RequireCommand(t, "e2fsck")
	out, err := exec.Command(fsck, "-fn", stateFS(t, disk)).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn of the state partition of %s: %v\n%s", disk, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// gptBytes returns the disk's primary GPT (protective MBR, header, entries: the first 34
// sectors) and its backup (the last 33 sectors).
func gptBytes(t *testing.T, disk string) []byte {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, (34+33)*512)
	if _, err := f.ReadAt(b[:34*512], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b[34*512:], st.Size()-33*512); err != nil {
		t.Fatal(err)
	}
	return b
}

// varKiB is the size of the filesystem on /var as df reports it, in KiB.
func varKiB(t *testing.T, vm *VM) int64 {
	t.Helper()
	out := vm.MustShell("df -k /var | tail -n 1", shellTimeout)
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("df -k /var: %q", out)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df -k /var: %q: %v", out, err)
	}
	return n
}

var mountedLine = regexp.MustCompile(`ingot: state partition mounted[^\n]*`)

// stateLine returns the console's "state partition mounted" line of this boot.
func stateLine(t *testing.T, vm *VM) string {
	t.Helper()
	l := mountedLine.FindAllString(vm.Console.Output(), -1)
	if len(l) == 0 {
		t.Fatalf("no %q on the console", "state partition mounted")
	}
	return strings.TrimSpace(l[len(l)-1])
}

// assertNoExt4Errors fails when the kernel reported an ext4 error.
func assertNoExt4Errors(t *testing.T, vm *VM) {
	t.Helper()
	out := vm.Console.Output()
	if i := strings.Index(out, "EXT4-fs error"); i >= 0 {
		t.Fatalf("the kernel reported an ext4 error:\n%s", tail(out[:min(len(out), i+500)], 2000))
	}
}

// assertItablesZeroed fails unless every block group of the disk's state filesystem has its
// inode table zeroed (dumpe2fs' ITABLE_ZEROED): ext4lazyinit finished its work.
func assertItablesZeroed(t *testing.T, disk string) {
	t.Helper()
	dumpe2fs := testgate.RequireCommand(t, "dumpe2fs")
	out, err := exec.Command(dumpe2fs, stateFS(t, disk)).Output()
	if err != nil {
		t.Fatalf("dumpe2fs of the state partition of %s: %v", disk, err)
	}
	groups, zeroed := 0, 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Group ") && strings.Contains(l, "(Blocks ") {
			groups++
			if strings.Contains(l, "ITABLE_ZEROED") {
				zeroed++
			}
		}
	}
	if groups == 0 || zeroed != groups {
		t.Fatalf("%d of %d block groups have their inode table zeroed", zeroed, groups)
	}
}

// waitLazyinit waits until ext4lazyinit has zeroed the inode tables of every new filesystem (the
// kernel thread exits when it has none left) and returns how long that took from now.
func waitLazyinit(t *testing.T, vm *VM) time.Duration {
	t.Helper()
	start := time.Now()
	secs := int(lazyinitTimeout / time.Second)
	// The kernel thread starts up to 5 s after the mount and exits when no filesystem has inode
	// tables left to zero; the node was ready seconds ago, so it is there unless it is done.
	out := vm.MustShell(fmt.Sprintf("i=0; while pidof ext4lazyinit >/dev/null && [ $i -lt %d ]; do sleep 1; i=$((i+1)); done; pidof ext4lazyinit || echo lazyinit-done", secs), lazyinitTimeout+time.Minute)
	// Kernel messages may share the console with the output; the marker is what counts.
	if !strings.Contains(out, "lazyinit-done") {
		t.Fatalf("ext4lazyinit still runs after %s: %q", lazyinitTimeout, out)
	}
	return time.Since(start)
}

// firstBoot boots a fresh working disk and checks the new /var: formatted, no ext4 error after
// ext4lazyinit has finished, clean to e2fsck after a clean poweroff. It returns the VM's /var
// size in KiB.
func firstBoot(t *testing.T, archName string, cfg qemu.Config) int64 {
	t.Helper()
	vm := BootWith(t, cfg)
	took := vm.WaitReady(bootTimeout)
	line := stateLine(t, vm)
	if !strings.Contains(line, "formatted=true") {
		t.Fatalf("first boot did not format /var: %s", line)
	}
	t.Logf("%s: node ready %d ms after QEMU start; %s", archName, took.Milliseconds(), line)
	vm.Prompt(shellTimeout)
	lazy := waitLazyinit(t, vm)
	t.Logf("%s: ext4lazyinit done %s after node ready", archName, lazy.Round(time.Second))
	size := varKiB(t, vm)
	assertNoExt4Errors(t, vm)
	vm.PowerOff(archName, qemu.BootDirect)
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
	assertNoExt4Errors(t, vm)
	t.Logf("%s: e2fsck -fn after a clean poweroff: %s", archName, fsckState(t, cfg.Disk))
	assertItablesZeroed(t, cfg.Disk)
	return size
}

// TestStateFilesystemInVM boots the dev image on the image's own state partition and on a disk
// grown to 6.3 GiB before the first boot: each /var is made by mke2fs, ext4lazyinit finishes
// without an ext4 error, and the host's e2fsck finds nothing after a clean poweroff. The first
// disk is then enlarged to 20 GiB: /var grows online, a file written before keeps its checksum.
// The 6.3 GiB one boots a second time: nothing is formatted, checked or grown again, and the
// partition table stays byte for byte as it was.
func TestStateFilesystemInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireVM(t, archName)
			img := Image(t, "dev", archName)

			t.Run("image size then enlarged", func(t *testing.T) {
				disk := filepath.Join(t.TempDir(), manifest.FileDisk)
				if err := qemu.CopySparse(filepath.Join(img, manifest.FileDisk), disk); err != nil {
					t.Fatal(err)
				}
				cfg := qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: disk}
				firstBoot(t, archName, cfg)

				vm := BootWith(t, cfg)
				vm.WaitReady(bootTimeout)
				vm.Prompt(shellTimeout)
				sum := vm.MustShell("dd if=/dev/urandom of=/var/kept bs=1M count=8 2>/dev/null && sync && sha256sum /var/kept | cut -d' ' -f1", shellTimeout)
				before := varKiB(t, vm)
				vm.PowerOff(archName, qemu.BootDirect)
				vm.WaitExit(powerTimeout)

				if err := os.Truncate(disk, enlargedDisk); err != nil {
					t.Fatal(err)
				}
				vm = BootWith(t, cfg)
				vm.WaitReady(bootTimeout)
				line := stateLine(t, vm)
				if !strings.Contains(line, "grown_to_mib=") || !strings.Contains(line, "filesystem_grown=true") || strings.Contains(line, "formatted=") {
					t.Fatalf("after enlarging the disk: %s", line)
				}
				vm.Prompt(shellTimeout)
				after := varKiB(t, vm)
				if after < enlargedDisk/1024*9/10 {
					t.Fatalf("/var is %d KiB on a %d KiB disk (was %d KiB)", after, enlargedDisk/1024, before)
				}
				if got := vm.MustShell("sha256sum /var/kept | cut -d' ' -f1", shellTimeout); got != sum {
					t.Fatalf("/var/kept's sha256 is %s after growing, was %s", got, sum)
				}
				t.Logf("%s: /var grew from %d to %d KiB; %s", archName, before, after, line)
				assertNoExt4Errors(t, vm)
				vm.PowerOff(archName, qemu.BootDirect)
				vm.WaitExit(powerTimeout)
				vm.AssertCleanConsole()
				assertNoExt4Errors(t, vm)
				t.Logf("%s: e2fsck -fn after growing: %s", archName, fsckState(t, disk))
			})

			t.Run("grown to 6.3 GiB", func(t *testing.T) {
				disk := filepath.Join(t.TempDir(), manifest.FileDisk)
				if err := qemu.WorkingDisk(filepath.Join(img, manifest.FileDisk), disk, true, grownDisk); err != nil {
					t.Fatal(err)
				}
				cfg := qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: disk}
				first := firstBoot(t, archName, cfg)
				if first < grownDisk/1024*9/10 {
					t.Fatalf("/var is %d KiB on a %d KiB disk", first, grownDisk/1024)
				}
				table := gptBytes(t, disk)

				vm := BootWith(t, cfg)
				vm.WaitReady(bootTimeout)
				if line := stateLine(t, vm); !strings.Contains(line, "found=ext4") || strings.Contains(line, "formatted=") || strings.Contains(line, "grown") {
					t.Fatalf("second boot: %s", line)
				}
				if strings.Contains(vm.Console.Output(), "checked before mounting") {
					t.Fatal("the second boot checked a cleanly unmounted /var")
				}
				vm.Prompt(shellTimeout)
				if second := varKiB(t, vm); second != first {
					t.Fatalf("/var is %d KiB on the second boot, %d KiB on the first", second, first)
				}
				vm.PowerOff(archName, qemu.BootDirect)
				vm.WaitExit(powerTimeout)
				vm.AssertCleanConsole()
				if again := gptBytes(t, disk); !bytes.Equal(again, table) {
					t.Fatal("the second boot rewrote the partition table")
				}
			})
		})
	}
}

var formatTook = regexp.MustCompile(`format_took=([0-9.]+m?s)`)

// TestStatePowerCutInVM cuts the power (kills QEMU) during the first-boot format of a 6.3 GiB
// /var: as the format starts, halfway through and near its end, timed from a format that was
// not cut. Every next boot formats again (the cut one reads as blank or an unfinished format,
// never as unknown data) or finds the format finished, reaches node ready, and the host's e2fsck
// finds nothing; at least one cut must land inside mke2fs.
func TestStatePowerCutInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range upgradeArches() {
		t.Run(archName, func(t *testing.T) {
			RequireVM(t, archName)
			img := Image(t, "dev", archName)
			fresh := func(t *testing.T) qemu.Config {
				disk := filepath.Join(t.TempDir(), manifest.FileDisk)
				if err := qemu.WorkingDisk(filepath.Join(img, manifest.FileDisk), disk, true, grownDisk); err != nil {
					t.Fatal(err)
				}
				return qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: disk}
			}

			// An uncut format, to time the cuts.
			vm := BootWith(t, fresh(t))
			vm.WaitFor("formatting the state partition", bootTimeout)
			start := time.Now()
			vm.WaitFor("state partition mounted", bootTimeout)
			took := time.Since(start)
			vm.WaitFor("\n", bootTimeout) // the rest of the line
			m := formatTook.FindStringSubmatch(stateLine(t, vm))
			if m == nil {
				t.Fatalf("no format_took on %q", stateLine(t, vm))
			}
			t.Logf("%s: a 6.3 GiB format took %s (console), %s (seen from the host)", archName, m[1], took.Round(time.Millisecond))
			vm.Kill()
			vm.Wait()

			unfinished := 0 // next boots that found a cut format's record
			for _, frac := range []float64{0, 0.5, 0.9} {
				t.Run(fmt.Sprintf("cut at %.0f%%", frac*100), func(t *testing.T) {
					cfg := fresh(t)
					vm := BootWith(t, cfg)
					vm.WaitFor("formatting the state partition", bootTimeout)
					time.Sleep(time.Duration(frac * float64(took)))
					vm.Kill()
					vm.Wait()

					vm = BootWith(t, cfg)
					vm.WaitReady(bootTimeout)
					line := stateLine(t, vm)
					switch {
					case strings.Contains(line, "formatted=true"):
						if strings.Contains(line, `found="an unfinished format"`) {
							unfinished++
						}
					case strings.Contains(line, "found=ext4"):
						// The format record was gone: mke2fs had finished and the disk was
						// flushed before the cut, though the console had not said so yet.
					default:
						t.Fatalf("after a cut during the format: %s", line)
					}
					t.Logf("%s: cut %s after the format started; next boot: %s", archName,
						time.Duration(frac*float64(took)).Round(time.Millisecond), line)
					assertNoExt4Errors(t, vm)
					vm.Prompt(shellTimeout)
					vm.PowerOff(archName, qemu.BootDirect)
					vm.WaitExit(powerTimeout)
					vm.AssertCleanConsole()
					t.Logf("%s: e2fsck -fn: %s", archName, fsckState(t, cfg.Disk))
				})
			}
			if unfinished == 0 {
				t.Error("no cut landed inside mke2fs (no next boot found the format record)")
			}
		})
	}
}

// bigRef is a test image made here: the busybox test image plus a layer holding bigFile, 32 MiB
// that do not compress, so that a pull takes long enough under TCG to be cut in the middle.
const (
	bigRef  = "registry.k8s.io/e2e-test-images/ingot-big:1"
	bigFile = "big.bin"
	bigSize = 32 << 20
)

// bigImage builds bigRef for arch from the busybox test image and returns it with the sha256 of
// bigFile's contents.
func bigImage(t *testing.T, imgs []testimages.Image, archName string) (testimages.Image, string) {
	t.Helper()
	i := slices.IndexFunc(imgs, func(im testimages.Image) bool { return im.Ref == "registry.k8s.io/e2e-test-images/busybox:1.29-2" })
	if i < 0 {
		t.Fatal("no busybox test image")
	}
	im, err := imgs[i].Index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var base v1.Image
	var plat v1.Platform
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Architecture == archName {
			if base, err = imgs[i].Index.Image(d.Digest); err != nil {
				t.Fatal(err)
			}
			plat = *d.Platform
		}
	}
	if base == nil {
		t.Fatalf("no %s busybox test image", archName)
	}
	data := make([]byte, bigSize)
	rand.NewChaCha8([32]byte{'i', 'n', 'g', 'o', 't'}).Read(data)
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	tw.WriteHeader(&tar.Header{Name: bigFile, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	tw.Write(data)
	tw.Close()
	layer, err := ggtarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarball.Bytes())), nil },
		ggtarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	sum := sha256.Sum256(data)
	return testimages.Image{Ref: bigRef, Index: idx}, hex.EncodeToString(sum[:])
}

var fsyncedLine = regexp.MustCompile(`fsynced-([0-9]+)`)

// TestStatePowerCutUnderLoadInVM cuts the power twice while the node is busy on /var: a container
// writes files into an emptyDir (a host directory under /var/lib/kubelet, as the kubelet makes
// one), syncing each before it prints its number, while the runtime pulls a 32 MiB image. Every
// next boot runs e2fsck -p (the console says so) and mounts /var; every file printed as synced
// before the cut is there with its contents; the images listed are whole (a container from the
// big image, when it is listed, reads its file with the right sha256) and a pull of the
// interrupted image succeeds. After a clean poweroff the host's e2fsck finds nothing.
func TestStatePowerCutUnderLoadInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range upgradeArches() {
		t.Run(archName, func(t *testing.T) { testStatePowerCutUnderLoad(t, archName) })
	}
}

func testStatePowerCutUnderLoad(t *testing.T, archName string) {
	RequireVM(t, archName)
	imgs, err := testimages.Build(context.Background(), testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	big, bigSum := bigImage(t, imgs, archName)
	profile := filepath.Join(t.TempDir(), "state-dev.toml")
	if err := os.WriteFile(profile, devWithMirrors(t), 0o644); err != nil {
		t.Fatal(err)
	}
	img := Image(t, profile, archName)
	disk := filepath.Join(t.TempDir(), manifest.FileDisk)
	if err := qemu.CopySparse(filepath.Join(img, manifest.FileDisk), disk); err != nil {
		t.Fatal(err)
	}
	cfg := qemu.Config{Image: img, Boot: qemu.BootDirect, Memory: 2048, Disk: disk,
		GuestFwd: []string{registryFwd(t, append(slices.Clone(imgs), big), guestRegistry)}}
	const long = 4 * time.Minute
	const busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

	// checkBig runs a container from the big image in a pod of its own and compares its file.
	checkBig := func(vm *VM, name string) {
		t.Helper()
		vm.MustShell(fmt.Sprintf(`echo '{"metadata":{"name":"%s","namespace":"default","uid":"%s-uid"},"log_directory":"/var/log/pods/%s","linux":{}}' >/tmp/%s-pod.json`, name, name, name, name), shellTimeout)
		vm.MustShell(fmt.Sprintf(`echo '{"metadata":{"name":"big"},"image":{"image":%q},"command":["sleep","3600"],"log_path":"big.log","linux":{}}' >/tmp/%s-big.json`, bigRef, name), shellTimeout)
		out := vm.MustShell(fmt.Sprintf("P=$(crictl runp /tmp/%[1]s-pod.json) && C=$(crictl create $P /tmp/%[1]s-big.json /tmp/%[1]s-pod.json) && crictl start $C >/dev/null && crictl exec $C sha256sum /%[2]s | cut -d' ' -f1; crictl rmp -f $P >/dev/null", name, bigFile), long)
		if !strings.Contains(out, bigSum) {
			t.Fatalf("/%s in a container from %s: sha256 %q, want %s", bigFile, bigRef, out, bigSum)
		}
	}

	vm := BootWith(t, cfg)
	vm.WaitReady(bootTimeout)
	vm.Prompt(shellTimeout)
	vm.MustShell("crictl pull "+busybox+" >/dev/null", long)
	start := time.Now()
	vm.MustShell("crictl pull "+bigRef+" >/dev/null", long)
	pullTook := time.Since(start)
	checkBig(vm, "whole")
	vm.MustShell("crictl rmi "+bigRef+" >/dev/null", long)
	t.Logf("%s: a whole pull of %s took %s", archName, bigRef, pullTook.Round(time.Millisecond))

	synced := map[int]int{} // cut → the last file number printed as synced before it
	for _, c := range []struct {
		n    int
		frac float64
	}{{1, 0.3}, {2, 0.8}} {
		dir := fmt.Sprintf("/var/lib/kubelet/pods/cut%d-uid/volumes/kubernetes.io~empty-dir/data", c.n)
		vm.MustShell(fmt.Sprintf(`mkdir -p %s && echo '{"metadata":{"name":"cut%d","namespace":"default","uid":"cut%d-uid"},"log_directory":"/var/log/pods/cut%d","linux":{}}' >/tmp/cut-pod.json`, dir, c.n, c.n, c.n), shellTimeout)
		vm.MustShell(fmt.Sprintf(`echo '{"metadata":{"name":"writer"},"image":{"image":%q},"command":["sh","-c","i=0; while :; do echo content-$i >/data/f$i && sync /data/f$i /data && echo fsynced-$i; i=$((i+1)); sleep 0.05; done"],"mounts":[{"container_path":"/data","host_path":%q}],"log_path":"writer.log","linux":{}}' >/tmp/cut-writer.json`, busybox, dir), shellTimeout)
		vm.MustShell("P=$(crictl runp /tmp/cut-pod.json) && W=$(crictl create $P /tmp/cut-writer.json /tmp/cut-pod.json) && crictl start $W >/dev/null", long)
		// The writer's output reaches the console through crictl logs -f, so the test sees each
		// number only after the file was synced.
		vm.MustShell("{ crictl logs -f $W & crictl pull "+bigRef+" >/tmp/pull.log 2>&1 & }", shellTimeout)
		vm.WaitFor("fsynced-5", long)
		time.Sleep(time.Duration(c.frac * float64(pullTook)))
		vm.Kill()
		vm.Wait()
		last := -1
		for _, m := range fsyncedLine.FindAllStringSubmatch(vm.Console.Output(), -1) {
			n, _ := strconv.Atoi(m[1])
			last = max(last, n)
		}
		synced[c.n] = last

		vm = BootWith(t, cfg)
		vm.WaitReady(bootTimeout)
		out := vm.Console.Output()
		i := strings.Index(out, "state partition checked before mounting")
		if i < 0 {
			t.Fatalf("cut %d: the next boot did not check /var:\n%s", c.n, tail(out, 3000))
		}
		t.Logf("%s: cut %d, %s into the pull, %d files synced: %s", archName, c.n,
			time.Duration(c.frac*float64(pullTook)).Round(time.Millisecond), last+1, strings.SplitN(out[i:], "\n", 2)[0])
		assertNoExt4Errors(t, vm)
		vm.Prompt(shellTimeout)
		for n, last := range synced {
			dir := fmt.Sprintf("/var/lib/kubelet/pods/cut%d-uid/volumes/kubernetes.io~empty-dir/data", n)
			got := vm.MustShell(fmt.Sprintf(`i=0; while [ $i -le %d ]; do [ "$(cat %s/f$i 2>/dev/null)" = content-$i ] || echo missing-$i; i=$((i+1)); done; echo checked`, last, dir), long)
			if got != "checked" {
				t.Fatalf("cut %d: files synced before the cut are lost or wrong:\n%s", n, got)
			}
		}
		images := vm.MustShell("crictl images", long)
		if !strings.Contains(images, "e2e-test-images/busybox") {
			t.Fatalf("cut %d: busybox, pulled whole before, is not listed:\n%s", c.n, images)
		}
		t.Logf("%s: cut %d: %s listed after the cut: %v", archName, c.n, bigRef, strings.Contains(images, "ingot-big"))
		if strings.Contains(images, "ingot-big") {
			// Listed: it must be whole.
			checkBig(vm, fmt.Sprintf("listed%d", c.n))
			vm.MustShell("crictl rmi "+bigRef+" >/dev/null", long)
		}
		vm.MustShell("crictl pull "+bigRef+" >/dev/null", long)
		checkBig(vm, fmt.Sprintf("pulled%d", c.n))
		vm.MustShell("crictl rmi "+bigRef+" >/dev/null", long)
	}
	vm.PowerOff(archName, qemu.BootDirect)
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
	t.Logf("%s: e2fsck -fn after the cuts: %s", archName, fsckState(t, disk))
}

// partitionDigest hashes the disk's state partition, less its superblock (e2fsck counts its own
// writes there even when it repairs nothing).
func partitionDigest(t *testing.T, disk string) string {
	t.Helper()
	p, err := statedisk.FindPartition(disk, statedisk.Label)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(f, p.Start(), 1024))
	io.Copy(h, io.NewSectionReader(f, p.Start()+2048, int64(p.Sectors)*p.Sector-2048))
	return hex.EncodeToString(h.Sum(nil))
}

// TestStateDamagedInVM damages a node's /var while it is off (the root directory's inode cleared,
// the superblock marked with errors) and boots it: e2fsck -p may not repair that, so the node
// must leave the partition untouched and unmounted, say so on the console in one line, and
// still reach node ready with /var on a tmpfs.
func TestStateDamagedInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range upgradeArches() {
		t.Run(archName, func(t *testing.T) {
			RequireVM(t, archName)
			img := Image(t, "dev", archName)
			disk := filepath.Join(t.TempDir(), manifest.FileDisk)
			if err := qemu.CopySparse(filepath.Join(img, manifest.FileDisk), disk); err != nil {
				t.Fatal(err)
			}
			cfg := qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: disk}
			vm := BootWith(t, cfg)
			vm.WaitReady(bootTimeout)
			vm.Prompt(shellTimeout)
			vm.PowerOff(archName, qemu.BootDirect)
			vm.WaitExit(powerTimeout)

			debugfs := testgate.RequireCommand(t, "debugfs")
			fs := stateFS(t, disk)
			for _, req := range []string{"clri <2>", "ssv state 2"} {
				if out, err := exec.Command(debugfs, "-w", "-R", req, fs).CombinedOutput(); err != nil {
					t.Fatalf("debugfs -w -R %q: %v: %s", req, err, out)
				}
			}
			before := partitionDigest(t, disk)

			vm = BootWith(t, cfg)
			vm.WaitReady(bootTimeout)
			out := vm.Console.Output()
			const refused = "ERROR: state partition left untouched and not mounted"
			i := strings.Index(out, refused)
			if i < 0 {
				t.Fatalf("no %q on the console", refused)
			}
			t.Logf("%s: %s", archName, strings.SplitN(out[i:], "\n", 2)[0])
			vm.Prompt(shellTimeout)
			if got := vm.MustShell("grep ' /var ' /proc/mounts | cut -d' ' -f1,3", shellTimeout); got != "tmpfs tmpfs" {
				t.Fatalf("/var is mounted from %q, want a tmpfs", got)
			}
			vm.PowerOff(archName, qemu.BootDirect)
			vm.WaitExit(powerTimeout)
			vm.AssertCleanConsole()
			if partitionDigest(t, disk) != before {
				t.Fatal("the node changed the damaged partition")
			}
		})
	}
}
