package statedisk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The state partition's filesystem is made, checked and grown by e2fsprogs (mke2fs, e2fsck,
// resize2fs), the tools whose output the kernel's ext4 is written against. The image ships them
// from Debian's packages (image/e2fsprogs) with the configuration below.

// Tools says where the e2fsprogs programs and their configuration files are.
type Tools struct {
	Bin string // holds mke2fs, e2fsck and resize2fs
	Etc string // holds mke2fs.conf and e2fsck.conf (MkfsConf, FsckConf)
	// Run is put before each program's path: tests run the image's own programs through the
	// image's dynamic loader ("ld.so --library-path DIR").
	Run []string
}

// NodeTools is where a node has them: the image's /bin and /etc/ingot.
var NodeTools = Tools{Bin: "/bin", Etc: "/etc/ingot"}

// Configuration file names under Tools.Etc.
const (
	MkfsConfName = "mke2fs.conf"
	FsckConfName = "e2fsck.conf"
)

// MkfsConf is the node's mke2fs.conf. Only the ext4 type is used. The features are mke2fs'
// ext4 defaults written out, so a change of Debian's defaults never changes a node's filesystem:
// a journal, extents, flex_bg (the groups' bitmaps and inode tables packed together at the
// start of each flex group), 64bit (a /var of more than 16 TiB) and metadata_csum (checksums
// on every metadata block, and the journal's). resize_inode reserves group descriptor blocks so
// the filesystem can grow online 1024-fold.
const MkfsConf = `# written by ingot build: the state partition's mke2fs settings (see init/statedisk)
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// FsckConf is the node's e2fsck.conf. A node checks /var before its clock is set: its hardware
// clock may be behind, or reset, and e2fsck would otherwise "repair" every timestamp it finds
// in the future.
const FsckConf = `# written by ingot build: the state partition's e2fsck settings (see init/statedisk)
[options]
	broken_system_clock = true
`

// MountOptions are the ext4 options /var is mounted with, beside the flags the caller gives
// (the node mounts it nosuid, nodev, noatime: atime updates would turn every image layer and log
// read into a metadata write).
//
// errors=remount-ro: when ext4 finds its metadata damaged it stops writing instead of writing
// on (errors=continue) or taking the whole node down (errors=panic). The runtime and kubelet
// then fail visibly, the node goes NotReady and is drained, and the next boot runs e2fsck -p
// because the superblock carries the error.
//
// No discard: an online discard for every freed extent slows each image removal and log
// rotation; the node trims /var now and then instead (Trim).
const MountOptions = "errors=remount-ro"

const (
	blockSize = 4096
	// minSize is the smallest partition Prepare formats.
	minSize = 16 << 20
	// The format record: the last 4 KiB of the partition, outside the filesystem, written before
	// mke2fs starts and cleared after it has finished and the disk has been flushed. mke2fs writes
	// the primary superblock last, but group descriptors and bitmaps long before it, so without
	// the record a cut format would read as unknown data, which a node never formats.
	recordSize   = blockSize
	formatRecord = "INGOT-STATE format started\n"
	// inodeRatioBig is the bytes per inode above bigFS: one inode per 16 KiB would give a 1 TiB
	// /var 64 Mi inodes and 16 GiB of inode tables for ext4lazyinit to zero after the first boot,
	// a quarter of that is still more files than a node's images and pods hold.
	bigFS         = 64 << 30
	inodeRatio    = 16 << 10
	inodeRatioBig = 64 << 10
)

func (t Tools) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	argv := append(slices.Clone(t.Run), filepath.Join(t.Bin, prog))
	argv = append(argv, args...)
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = []string{
		"PATH=" + t.Bin, "LANG=C",
		"MKE2FS_CONFIG=" + filepath.Join(t.Etc, MkfsConfName),
		"E2FSCK_CONFIG=" + filepath.Join(t.Etc, FsckConfName),
	}
	return c
}

// run runs a program and returns its output, with the error naming the program and exit code.
func (t Tools) run(ctx context.Context, prog string, args ...string) (string, error) {
	out, err := t.command(ctx, prog, args...).CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil {
		return text, fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, lastLines(text, 3))
	}
	return text, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// mkfsArgs are mke2fs' arguments for a partition of size bytes.
func mkfsArgs(dev, label string, size int64) []string {
	ratio := inodeRatio
	if size > bigFS {
		ratio = inodeRatioBig
	}
	return []string{
		"-q", "-F", "-t", "ext4", "-b", fmt.Sprint(blockSize), "-L", label,
		"-i", fmt.Sprint(ratio),
		// 1% for root instead of 5%: on a node almost everything runs as root, so the reserve
		// protects little, and 5% of a large disk is many GiB the kubelet's eviction never sees.
		"-m", "1",
		// lazy_itable_init: inode tables are zeroed by the kernel after mount (ext4lazyinit),
		// not here, so the first boot is quick on any size. lazy_journal_init: the journal is
		// not zeroed; a fresh journal is never replayed. nodiscard: the format record at the end
		// must survive, and a partition fresh from the image is all zeros already.
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
		dev,
		// The filesystem ends before the format record.
		fmt.Sprint((size - recordSize) / blockSize),
	}
}

// Format makes an empty ext4 filesystem labelled label on dev (a partition, or a file in tests)
// with mke2fs, crash-safely: a power cut at any moment leaves either the old contents with the
// format record (Probe: Unfinished, formatted again on the next boot) or the finished filesystem.
func (t Tools) Format(ctx context.Context, dev, label string) error {
	fd, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("format %s: %w", dev, err)
	}
	defer fd.Close()
	size, err := fd.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("format %s: size: %w", dev, err)
	}
	if size < minSize {
		return fmt.Errorf("format %s: %d bytes is too small for a state partition (at least %d)", dev, size, minSize)
	}
	record := make([]byte, recordSize)
	copy(record, formatRecord)
	if err := writeSync(fd, record, size-recordSize); err != nil {
		return fmt.Errorf("format %s: write the format record: %w", dev, err)
	}
	if _, err := t.run(ctx, "mke2fs", mkfsArgs(dev, label, size)...); err != nil {
		return fmt.Errorf("format %s: %w", dev, err)
	}
	// mke2fs has flushed; flush again through this descriptor before the record goes, so the
	// record never disappears ahead of the filesystem.
	if err := fd.Sync(); err != nil {
		return fmt.Errorf("format %s: sync: %w", dev, err)
	}
	if err := writeSync(fd, make([]byte, recordSize), size-recordSize); err != nil {
		return fmt.Errorf("format %s: clear the format record: %w", dev, err)
	}
	return nil
}

func writeSync(fd *os.File, b []byte, off int64) error {
	if _, err := fd.WriteAt(b, off); err != nil {
		return err
	}
	return fd.Sync()
}

// superblock holds the ext4 superblock fields Prepare looks at.
type superblock struct {
	blocks    uint64 // filesystem size in blocks
	blockSize int64
	state     uint16 // s_state: 1 cleanly unmounted, 2 errors detected
	incompat  uint32
}

const (
	stateValid      = 0x1
	stateErrors     = 0x2
	incompatRecover = 0x4  // the journal needs replaying
	incompat64bit   = 0x80 // s_blocks_count_hi is used
)

func readSuperblock(dev string) (superblock, error) {
	fd, err := os.Open(dev)
	if err != nil {
		return superblock{}, err
	}
	defer fd.Close()
	b := make([]byte, 1024)
	if _, err := fd.ReadAt(b, 1024); err != nil {
		return superblock{}, fmt.Errorf("read the superblock of %s: %w", dev, err)
	}
	sb, ok := parseSuperblock(b)
	if !ok {
		return superblock{}, fmt.Errorf("%s has no ext4 superblock", dev)
	}
	return sb, nil
}

// parseSuperblock reads the fields Prepare uses from the 1024 bytes of an ext2/3/4 superblock;
// false when b has no superblock's magic.
func parseSuperblock(b []byte) (superblock, bool) {
	le := binary.LittleEndian
	if len(b) < 1024 || le.Uint16(b[0x38:]) != 0xEF53 {
		return superblock{}, false
	}
	sb := superblock{
		blocks:    uint64(le.Uint32(b[0x04:])),
		blockSize: 1024 << min(le.Uint32(b[0x18:]), 6), // at most 64 KiB blocks
		state:     le.Uint16(b[0x3A:]),
		incompat:  le.Uint32(b[0x60:]),
	}
	if sb.incompat&incompat64bit != 0 {
		sb.blocks |= uint64(le.Uint32(b[0x150:])) << 32
	}
	return sb, true
}

// needsCheck says why the filesystem must be checked before it is mounted, or "".
func (sb superblock) needsCheck() string {
	switch {
	case sb.state&stateErrors != 0:
		return "the kernel recorded errors on it"
	case sb.incompat&incompatRecover != 0:
		return "it was not cleanly unmounted"
	case sb.state&stateValid == 0:
		return "it is not marked clean"
	}
	return ""
}

// ErrNotRepaired means e2fsck -p found damage it may not repair without an operator.
var ErrNotRepaired = errors.New("e2fsck -p could not repair it")

// Check is what CheckBeforeMount did.
type Check struct {
	Why    string // why e2fsck ran; "" when it did not
	Exit   int    // e2fsck's exit status: 0 clean, 1 repaired
	Output string // e2fsck's output, one line
	Took   time.Duration
}

// CheckBeforeMount runs e2fsck -p on dev when its superblock says it was not cleanly unmounted
// or has errors. An exit status of 4 or more (errors left, or e2fsck failed) is ErrNotRepaired:
// the caller must not mount it, and must not format it either.
func (t Tools) CheckBeforeMount(ctx context.Context, dev string) (Check, error) {
	sb, err := readSuperblock(dev)
	if err != nil {
		return Check{}, err
	}
	c := Check{Why: sb.needsCheck()}
	if c.Why == "" {
		return c, nil
	}
	start := time.Now()
	out, err := t.command(ctx, "e2fsck", "-p", dev).CombinedOutput()
	c.Took = time.Since(start)
	c.Output = strings.Join(strings.Fields(strings.ReplaceAll(string(out), "\n", " / ")), " ")
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		c.Exit = exit.ExitCode()
	default:
		return c, fmt.Errorf("e2fsck -p %s: %w", dev, err)
	}
	// 1: errors corrected; 2: corrected, and a mounted root would need a reboot (not ours).
	if c.Exit >= 4 {
		return c, fmt.Errorf("%s: %w (e2fsck exit status %d: %s)", dev, ErrNotRepaired, c.Exit, c.Output)
	}
	return c, nil
}

// growSlack is how much bigger than its filesystem a partition must be before Resize grows the
// filesystem: the format record's block is always left over.
const growSlack = 1 << 20

// Resize grows the mounted ext4 filesystem on dev to fill the partition (resize2fs, online: the
// kernel extends it through its journal, so a power cut leaves the old or the new size). It
// reports whether it grew the filesystem.
func (t Tools) Resize(ctx context.Context, dev string) (bool, error) {
	sb, err := readSuperblock(dev)
	if err != nil {
		return false, err
	}
	size, err := deviceSize(dev)
	if err != nil {
		return false, err
	}
	if size-int64(sb.blocks)*sb.blockSize < growSlack {
		return false, nil
	}
	if _, err := t.run(ctx, "resize2fs", dev); err != nil {
		return false, fmt.Errorf("grow the filesystem on %s: %w", dev, err)
	}
	return true, nil
}

func deviceSize(dev string) (int64, error) {
	fd, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer fd.Close()
	size, err := fd.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	return size, nil
}

// fitrim is FITRIM, _IOWR('X', 121, struct fstrim_range).
const fitrim = 0xC0185879

// Trim tells the disk that the free blocks of the ext4 filesystem mounted at dir are unused
// (FITRIM over the whole filesystem) and returns how many bytes the kernel trimmed. A disk
// without discard support gives ENOTSUP or EOPNOTSUPP.
func Trim(dir string) (uint64, error) {
	fd, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("trim %s: %w", dir, err)
	}
	defer fd.Close()
	r := struct{ start, length, minLen uint64 }{0, ^uint64(0), 0}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd.Fd(), fitrim, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return 0, fmt.Errorf("trim %s (FITRIM): %w", dir, errno)
	}
	return r.length, nil // the kernel writes back the number of bytes trimmed
}
