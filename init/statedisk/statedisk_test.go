package statedisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime"
	"sync"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/image/e2fsprogs"
	"ingot.dev/ingot/internal/cachedir"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"ingot.dev/ingot/internal/testgate"
)

func TestFindByPartname(t *testing.T) {
	sys := t.TempDir()
	for name, ev := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=INGOT-ESP\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=INGOT-STATE\n",
	} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.WriteFile(filepath.Join(sys, name, "uevent"), []byte(ev), 0o644)
	}
	dev, err := Find(context.Background(), sys, "/dev", Label, 0)
	if err != nil || dev != "/dev/vda2" {
		t.Fatalf("Find = %q, %v", dev, err)
	}
	if _, err := Find(context.Background(), sys, "/dev", "NOPE", 30*time.Millisecond); err == nil {
		t.Fatal("found a label that is not there")
	}
}

// A disk whose driver probes slowly (NVMe, AHCI) shows up after the usual wait: Find keeps looking
// while no disk is there at all, then gives its partitions the usual wait.
func TestFindWaitsForASlowDisk(t *testing.T) {
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "loop0"), 0o755)
	os.WriteFile(filepath.Join(sys, "loop0", "uevent"), []byte("DEVNAME=loop0\nDEVTYPE=disk\n"), 0o644)
	go func() {
		time.Sleep(300 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "nvme0n1"), 0o755)
		os.WriteFile(filepath.Join(sys, "nvme0n1", "uevent"), []byte("DEVNAME=nvme0n1\nDEVTYPE=disk\n"), 0o644)
		time.Sleep(20 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "nvme0n1p2"), 0o755)
		os.WriteFile(filepath.Join(sys, "nvme0n1p2", "partition"), []byte("2\n"), 0o644)
		os.WriteFile(filepath.Join(sys, "nvme0n1p2", "uevent"), []byte("DEVNAME=nvme0n1p2\nDEVTYPE=partition\nPARTNAME=INGOT-STATE\n"), 0o644)
	}()
	dev, err := Find(context.Background(), sys, "/dev", Label, 50*time.Millisecond)
	if err != nil || dev != "/dev/nvme0n1p2" {
		t.Fatalf("Find = %q, %v", dev, err)
	}
}

// nodeTools stages the image's own mke2fs, e2fsck and resize2fs for this host's architecture
// (image/e2fsprogs, from Debian's packages) with the node's configuration, so the tests run the
// programs and settings a node runs. They are staged once per test binary.
func nodeTools(t *testing.T) Tools {
	t.Helper()
	testgate.RequireCommand(t, "dpkg-deb")
	testgate.RequireCommand(t, "apt-get")
	staged.once.Do(func() { staged.tools, staged.err = stageTools() })
	if staged.err != nil {
		t.Fatal(staged.err)
	}
	return staged.tools
}

var staged struct {
	once  sync.Once
	dir   string
	tools Tools
	err   error
}

func stageTools() (Tools, error) {
	fetch := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: runtime.GOARCH}
	unpack := func(ctx context.Context, name string) (string, error) {
		p, err := fetch.Fetch(ctx, name)
		if err != nil {
			return "", err
		}
		return fetch.Unpack(ctx, p)
	}
	files, err := e2fsprogs.Collect(context.Background(), unpack)
	if err != nil {
		return Tools{}, err
	}
	if staged.dir, err = os.MkdirTemp("", "statedisk-tools-"); err != nil {
		return Tools{}, err
	}
	run, err := e2fsprogs.Stage(files, staged.dir)
	if err != nil {
		return Tools{}, err
	}
	etc := filepath.Join(staged.dir, "etc/ingot")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return Tools{}, err
	}
	for name, data := range map[string]string{MkfsConfName: MkfsConf, FsckConfName: FsckConf} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(data), 0o644); err != nil {
			return Tools{}, err
		}
	}
	return Tools{Bin: filepath.Join(staged.dir, "bin"), Etc: etc, Run: run}, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if staged.dir != "" {
		os.RemoveAll(staged.dir)
	}
	os.Exit(code)
}

func sparse(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// fsckClean runs the host's own e2fsck -fn (a checker independent of the node's copy) and fails
// on any finding; it returns the output.
func fsckClean(t *testing.T, img string) string {
	t.Helper()
	fsck := testgate.RequireCommand(t, "e2fsck")
	out, err := exec.Command(fsck, "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
	return string(out)
}

// The node's formatter on sparse files of the sizes a node meets, from the image's own state
// partition to a 1 TiB disk: the host's e2fsck finds nothing, and dumpe2fs shows 4 KiB blocks,
// a journal, metadata_csum and the label.
func TestFormatSizes(t *testing.T) {
	tools := nodeTools(t)
	dumpe2fs := testgate.RequireCommand(t, "dumpe2fs")
	for _, tc := range []struct {
		name string
		size int64
	}{
		{"256M", 256 << 20}, {"2G", 2 << 30}, {"6.3G", 6451 << 20}, {"64G", 64 << 30}, {"1T", 1 << 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := sparse(t, tc.size)
			if k, err := Probe(img); err != nil || k != Blank {
				t.Fatalf("probe before = %v, %v", k, err)
			}
			start := time.Now()
			if err := tools.Format(context.Background(), img, Label); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if k, err := Probe(img); err != nil || k != Ext4 {
				t.Fatalf("probe after = %v, %v", k, err)
			}
			out := fsckClean(t, img)
			t.Logf("%s: formatted in %d ms; e2fsck -fn: %s", tc.name, took.Milliseconds(), lastLines(out, 1))
			// Mounted once, as the node does (the kernel turns on the journal's checksums), without
			// ext4lazyinit, which would write the inode tables into the sparse file.
			testgate.RequireRoot(t)
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-o", "loop,noinit_itable,"+MountOptions, "-t", "ext4", img, mnt).CombinedOutput(); err != nil {
				t.Fatalf("mount: %v: %s", err, out)
			}
			if err := os.WriteFile(filepath.Join(mnt, "hello"), []byte("state"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Unmount(mnt, 0); err != nil {
				t.Fatal(err)
			}
			out = fsckClean(t, img)
			t.Logf("%s: after a mount: e2fsck -fn: %s", tc.name, lastLines(out, 1))
			h, err := exec.Command(dumpe2fs, "-h", img).CombinedOutput()
			if err != nil {
				t.Fatalf("dumpe2fs -h: %v\n%s", err, h)
			}
			head := string(h)
			for _, want := range []string{"has_journal", "metadata_csum", "64bit", "flex_bg", "Block size:               4096",
				"Filesystem volume name:   " + Label, "Total journal size:", "journal_checksum_v3", "Filesystem state:         clean"} {
				if !strings.Contains(head, want) {
					t.Errorf("dumpe2fs -h lacks %q:\n%s", want, head)
				}
			}
			sb, err := readSuperblock(img)
			if err != nil {
				t.Fatal(err)
			}
			// The filesystem ends one block short of the partition: the format record's block.
			if got, want := int64(sb.blocks)*sb.blockSize, tc.size-recordSize; got != want {
				t.Errorf("filesystem is %d bytes, want %d", got, want)
			}
			if why := sb.needsCheck(); why != "" {
				t.Errorf("a fresh filesystem needs a check: %s", why)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	blank := sparse(t, 64<<20)
	if k, err := Probe(blank); err != nil || k != Blank {
		t.Fatalf("probe blank = %v, %v", k, err)
	}
	junk := sparse(t, 64<<20)
	writeAt(t, junk, 4096, []byte("data"))
	if k, _ := Probe(junk); k != Other {
		t.Fatalf("probe junk = %v", k)
	}
	// A format record wins over what the start holds: mke2fs was cut, whatever it had written.
	writeAt(t, junk, 64<<20-recordSize, []byte(formatRecord))
	if k, _ := Probe(junk); k != Unfinished {
		t.Fatalf("probe with a format record = %v", k)
	}
	if k, err := Probe(sparse(t, 1<<20)); err == nil {
		t.Fatalf("probe of 1 MiB = %v, want an error", k)
	}
}

// A first format cut short at any point reads as Unfinished, never as unknown data, and the
// next format finishes it. The partial states are rebuilt from a finished format, in the order
// Format and mke2fs write (mke2fs writes the primary superblock last): the record alone; the
// record and the metadata before the superblock; everything but the record's removal. The VM
// test cuts real formats by killing QEMU.
func TestFormatCutShort(t *testing.T) {
	tools := nodeTools(t)
	const size = 512 << 20
	done := sparse(t, size)
	if err := tools.Format(context.Background(), done, Label); err != nil {
		t.Fatal(err)
	}
	full := readAt(t, done, 0, 4<<20)
	record := make([]byte, recordSize)
	copy(record, formatRecord)
	for _, tc := range []struct {
		name  string
		write func(img string)
	}{
		{"record only", func(img string) { writeAt(t, img, size-recordSize, record) }},
		{"metadata, no superblock", func(img string) {
			writeAt(t, img, size-recordSize, record)
			writeAt(t, img, 4096, full[4096:]) // group descriptors, bitmaps, inode tables: not the superblock
		}},
		{"all but the record's removal", func(img string) {
			writeAt(t, img, 0, full)
			writeAt(t, img, size-recordSize, record)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := sparse(t, size)
			tc.write(img)
			if k, err := Probe(img); err != nil || k != Unfinished {
				t.Fatalf("probe = %v, %v; want %v", k, err, Unfinished)
			}
			if err := tools.Format(context.Background(), img, Label); err != nil {
				t.Fatal(err)
			}
			if k, err := Probe(img); err != nil || k != Ext4 {
				t.Fatalf("probe after formatting again = %v, %v", k, err)
			}
			fsckClean(t, img)
		})
	}
}

// mountLoop mounts img on a fresh directory through a loop device, as the node mounts /var.
func mountLoop(t *testing.T, img string) string {
	t.Helper()
	testgate.RequireRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,"+MountOptions, "-t", "ext4", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v: %s", img, err, out)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	return mnt
}

// After a stop that was not clean (a mounted filesystem copied as it is, journal and all),
// CheckBeforeMount runs e2fsck -p and says so; a clean filesystem is not checked; one with damage
// e2fsck -p may not repair is ErrNotRepaired and left as it was.
func TestCheckBeforeMount(t *testing.T) {
	tools := nodeTools(t)
	img := sparse(t, 256<<20)
	if err := tools.Format(context.Background(), img, Label); err != nil {
		t.Fatal(err)
	}
	if c, err := tools.CheckBeforeMount(context.Background(), img); err != nil || c.Why != "" {
		t.Fatalf("clean filesystem: check = %+v, %v; want no check", c, err)
	}

	// A power cut while mounted: copy the image while it is mounted and written to.
	mnt := mountLoop(t, img)
	if err := os.WriteFile(filepath.Join(mnt, "kept"), []byte("fsynced"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(mnt, "kept"))
	f.Sync()
	f.Close()
	cut := sparse(t, 256<<20)
	if out, err := exec.Command("cp", "--sparse=always", img, cut).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v: %s", err, out)
	}
	c, err := tools.CheckBeforeMount(context.Background(), cut)
	if err != nil || c.Why != "it was not cleanly unmounted" || c.Exit > 1 {
		t.Fatalf("cut filesystem: check = %+v, %v", c, err)
	}
	t.Logf("after a cut: e2fsck -p exit %d in %s: %s", c.Exit, c.Took, c.Output)
	fsckClean(t, cut)
	if got := string(readFileIn(t, cut, "kept")); got != "fsynced" {
		t.Fatalf("fsynced file after the check = %q", got)
	}

	// Damage: the root inode's block map cleared in a filesystem marked with errors.
	bad := sparse(t, 256<<20)
	if err := tools.Format(context.Background(), bad, Label); err != nil {
		t.Fatal(err)
	}
	debugfs := testgate.RequireCommand(t, "debugfs")
	if out, err := exec.Command(debugfs, "-w", "-R", "clri <2>", bad).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v: %s", err, out)
	}
	setState(t, bad, stateErrors)
	c, err = tools.CheckBeforeMount(context.Background(), bad)
	if !errors.Is(err, ErrNotRepaired) {
		t.Fatalf("damaged filesystem: check = %+v, %v; want ErrNotRepaired", c, err)
	}
	if c.Why != "the kernel recorded errors on it" {
		t.Fatalf("why = %q", c.Why)
	}
	t.Logf("damaged: %v", err)
}

// setState sets s_state and fixes the superblock checksum (metadata_csum: crc32c of the first
// 1020 bytes).
func setState(t *testing.T, img string, state uint16) {
	t.Helper()
	sb := readAt(t, img, 1024, 1024)
	binary.LittleEndian.PutUint16(sb[0x3A:], state)
	// ext4's crc32c starts at ~0 and is not inverted at the end; Go's is.
	binary.LittleEndian.PutUint32(sb[0x3FC:], ^crc32.Checksum(sb[:0x3FC], crc32.MakeTable(crc32.Castagnoli)))
	writeAt(t, img, 1024, sb)
}

// readFileIn reads a file out of an unmounted ext4 image with debugfs.
func readFileIn(t *testing.T, img, name string) []byte {
	t.Helper()
	debugfs := testgate.RequireCommand(t, "debugfs")
	out, err := exec.Command(debugfs, "-R", "cat /"+name, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", name, err)
	}
	return out
}

// Resize leaves a filesystem alone when its partition is not at least growSlack bigger, and grows
// it to the partition's end when it is.
func TestResize(t *testing.T) {
	tools := nodeTools(t)
	img := sparse(t, 256<<20)
	if err := tools.Format(context.Background(), img, Label); err != nil {
		t.Fatal(err)
	}
	if grew, err := tools.Resize(context.Background(), img); err != nil || grew {
		t.Fatalf("resize of a fresh filesystem = %v, %v; want nothing to do", grew, err)
	}
	// Growing happens online, through the kernel (EXT4_IOC_RESIZE_FS), which wants
	// CAP_SYS_RESOURCE; the VM tests grow a node's /var from 256 MiB to 20 GiB.
	os.Truncate(img, 256<<20-recordSize+growSlack-1)
	if grew, err := tools.Resize(context.Background(), img); err != nil || grew {
		t.Fatalf("resize with less than %d bytes to gain = %v, %v; want nothing to do", growSlack, grew, err)
	}
	// A filesystem never mounted since mke2fs may be grown offline too, which root without
	// CAP_SYS_RESOURCE can do.
	os.Truncate(img, 20<<30)
	if grew, err := tools.Resize(context.Background(), img); err != nil || !grew {
		t.Fatalf("resize to 20 GiB = %v, %v", grew, err)
	}
	sb, err := readSuperblock(img)
	if err != nil {
		t.Fatal(err)
	}
	if got := int64(sb.blocks) * sb.blockSize; got != 20<<30 {
		t.Fatalf("filesystem is %d bytes after growing to 20 GiB", got)
	}
	fsckClean(t, img)
}

// Trim hands a mounted filesystem's free blocks back to its disk: a loop device over a file
// punches holes, so the file's allocated size shrinks.
func TestTrim(t *testing.T) {
	tools := nodeTools(t)
	img := sparse(t, 256<<20)
	if err := tools.Format(context.Background(), img, Label); err != nil {
		t.Fatal(err)
	}
	mnt := mountLoop(t, img)
	data := bytes.Repeat([]byte("state"), 8<<20/5)
	if err := os.WriteFile(filepath.Join(mnt, "gone"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	if err := os.Remove(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	allocated := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(img, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before := allocated()
	trimmed, err := Trim(mnt)
	if err != nil {
		t.Fatal(err)
	}
	after := allocated()
	t.Logf("trimmed %d bytes; the image file holds %d bytes, %d before", trimmed, after, before)
	if trimmed == 0 || before-after < 4<<20 {
		t.Fatalf("Trim reported %d bytes; the image file went from %d to %d allocated bytes", trimmed, before, after)
	}
}

// A filesystem that covers its partition's last block (it grew with its disk) holds file data
// there, and a workload can make that data anything, the format record's text included. That must
// never read as an unfinished format, which the node would format over: a record counts only
// outside the filesystem the superblock describes.
func TestProbeRecordInsideFilesystem(t *testing.T) {
	tools := nodeTools(t)
	img := sparse(t, 256<<20)
	if err := tools.Format(context.Background(), img, Label); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if grew, err := tools.Resize(context.Background(), img); err != nil || !grew {
		t.Fatalf("resize = %v, %v", grew, err)
	}
	// A file block that happens to be the partition's last one, written by a pod.
	writeAt(t, img, 512<<20-recordSize, []byte(formatRecord+"written by a pod\n"))
	if k, err := Probe(img); err != nil || k != Ext4 {
		t.Fatalf("probe of a grown filesystem whose last block holds the record's text = %v, %v; want %v", k, err, Ext4)
	}
}
