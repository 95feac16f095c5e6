package statedisk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The image ships a small state partition so that disk.raw stays small; on a real disk (or a
// grown working copy) the rest of the disk would be wasted. Grow moves the partition's end and
// the backup GPT to the end of the disk, on the first boot before the partition is formatted,
// and on a later boot when the disk has been enlarged (the filesystem follows online, Resize).
// It is careful in the way Prepare is: it only touches a partition that is the last one on the
// disk and holds what Probe calls blank, an unfinished format or ext4, never unknown data. The
// partition only grows: its start and everything in it stay where they are.

// Growth says where the partition lies after Grow, in bytes from the start of the disk.
type Growth struct {
	Index  int   // 1-based GPT entry number, as the kernel numbers partitions
	Start  int64 // byte offset of the first sector
	Size   int64 // bytes
	OldEnd int64 // byte offset just past the partition before growing
	Grown  bool  // false: the table was left exactly as it was
}

const (
	gptSignature  = "EFI PART"
	gptHeaderSize = 92
	blankProbe    = 1 << 20 // bytes at the start of the partition that must be zero
	growAlign     = 1 << 20 // the partition's size stays a whole number of MiB
)

// gptHeader holds the fields of a GPT header that Grow reads or rewrites (UEFI spec 5.3.2).
type gptHeader struct {
	raw          []byte // the whole header sector as read
	myLBA        uint64
	altLBA       uint64
	firstUsable  uint64
	lastUsable   uint64
	entriesLBA   uint64
	numEntries   uint32
	entrySize    uint32
	entriesCRC32 uint32
}

func parseHeader(b []byte) (gptHeader, error) {
	if string(b[:8]) != gptSignature {
		return gptHeader{}, errors.New("no GPT signature")
	}
	size := binary.LittleEndian.Uint32(b[12:])
	if size < gptHeaderSize || int(size) > len(b) {
		return gptHeader{}, fmt.Errorf("GPT header size %d is out of range", size)
	}
	want := binary.LittleEndian.Uint32(b[16:])
	hdr := bytes.Clone(b[:size])
	binary.LittleEndian.PutUint32(hdr[16:], 0)
	if got := crc32.ChecksumIEEE(hdr); got != want {
		return gptHeader{}, fmt.Errorf("GPT header CRC is %#x, header says %#x", got, want)
	}
	h := gptHeader{
		raw:          bytes.Clone(b),
		myLBA:        binary.LittleEndian.Uint64(b[24:]),
		altLBA:       binary.LittleEndian.Uint64(b[32:]),
		firstUsable:  binary.LittleEndian.Uint64(b[40:]),
		lastUsable:   binary.LittleEndian.Uint64(b[48:]),
		entriesLBA:   binary.LittleEndian.Uint64(b[72:]),
		numEntries:   binary.LittleEndian.Uint32(b[80:]),
		entrySize:    binary.LittleEndian.Uint32(b[84:]),
		entriesCRC32: binary.LittleEndian.Uint32(b[88:]),
	}
	if h.entrySize < 128 || h.entrySize%8 != 0 || h.numEntries == 0 || h.numEntries > 1024 {
		return gptHeader{}, fmt.Errorf("GPT header has %d entries of %d bytes", h.numEntries, h.entrySize)
	}
	return h, nil
}

// encode returns the header sector with the changed fields and a fresh CRC.
func (h gptHeader) encode() []byte {
	b := bytes.Clone(h.raw)
	binary.LittleEndian.PutUint64(b[24:], h.myLBA)
	binary.LittleEndian.PutUint64(b[32:], h.altLBA)
	binary.LittleEndian.PutUint64(b[48:], h.lastUsable)
	binary.LittleEndian.PutUint64(b[72:], h.entriesLBA)
	binary.LittleEndian.PutUint32(b[88:], h.entriesCRC32)
	size := binary.LittleEndian.Uint32(b[12:])
	binary.LittleEndian.PutUint32(b[16:], 0)
	binary.LittleEndian.PutUint32(b[16:], crc32.ChecksumIEEE(b[:size]))
	return b
}

func entryName(e []byte) string {
	u := make([]uint16, 0, 36)
	for i := 56; i+1 < 128; i += 2 {
		c := binary.LittleEndian.Uint16(e[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// gptTable is a disk's primary GPT, its header's and entries' CRCs checked.
type gptTable struct {
	hdr     gptHeader
	sector  int64 // the logical sector size: 512 or 4096
	entries []byte
}

// readPrimaryGPT reads the primary GPT. The header sits in LBA 1; its offset tells the sector size.
func readPrimaryGPT(fd *os.File) (gptTable, error) {
	var t gptTable
	for _, ss := range []int64{512, 4096} {
		b := make([]byte, ss)
		if _, err := fd.ReadAt(b, ss); err != nil {
			continue
		}
		if h, err := parseHeader(b); err == nil {
			t.hdr, t.sector = h, ss
			break
		} else if string(b[:8]) == gptSignature {
			return t, fmt.Errorf("primary GPT: %w", err)
		}
	}
	if t.sector == 0 {
		return t, errors.New("no GPT (no primary header in LBA 1)")
	}
	if t.hdr.myLBA != 1 {
		return t, fmt.Errorf("primary GPT header says it is at LBA %d", t.hdr.myLBA)
	}
	t.entries = make([]byte, int64(t.hdr.numEntries)*int64(t.hdr.entrySize))
	if _, err := fd.ReadAt(t.entries, int64(t.hdr.entriesLBA)*t.sector); err != nil {
		return t, fmt.Errorf("read GPT entries: %w", err)
	}
	if got := crc32.ChecksumIEEE(t.entries); got != t.hdr.entriesCRC32 {
		return t, fmt.Errorf("GPT entries CRC is %#x, header says %#x", got, t.hdr.entriesCRC32)
	}
	return t, nil
}

// Partition is a GPT partition found by name (FindPartition).
type Partition struct {
	Number   int    // 1-based entry number, as the kernel numbers partitions
	FirstLBA uint64 // in the disk's logical sectors
	Sectors  uint64
	Sector   int64    // the logical sector size in bytes
	GUID     [16]byte // the unique partition GUID, as the entry stores it
}

// Start is the partition's byte offset on the disk.
func (p Partition) Start() int64 { return int64(p.FirstLBA) * p.Sector }

// FindPartition finds the partition named name in the primary GPT of disk (an image file or a
// whole-disk block device).
func FindPartition(disk, name string) (Partition, error) {
	fd, err := os.Open(disk)
	if err != nil {
		return Partition{}, err
	}
	defer fd.Close()
	t, err := readPrimaryGPT(fd)
	if err != nil {
		return Partition{}, fmt.Errorf("%s: %w", disk, err)
	}
	size := int(t.hdr.entrySize)
	for i := range int(t.hdr.numEntries) {
		e := t.entries[i*size : (i+1)*size]
		if allZero(e[:16]) || entryName(e) != name {
			continue
		}
		p := Partition{Number: i + 1, FirstLBA: binary.LittleEndian.Uint64(e[32:]), Sector: t.sector}
		p.Sectors = binary.LittleEndian.Uint64(e[40:]) - p.FirstLBA + 1
		copy(p.GUID[:], e[16:32])
		return p, nil
	}
	return Partition{}, fmt.Errorf("%s: %w named %s in the GPT", disk, ErrNotFound, name)
}

// Grow extends the GPT partition named label on the disk (an image file or a whole-disk block
// device) to the end of the disk and moves the backup GPT to the disk's last sector. It leaves
// the disk untouched, with Grown false, when the partition is not the last one, when it holds
// unknown data (Probe's Other), or when it already reaches (to within a MiB) the end of the disk.
func Grow(diskPath, label string) (Growth, error) {
	fd, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		return Growth{}, fmt.Errorf("grow %s on %s: %w", label, diskPath, err)
	}
	defer fd.Close()
	g, err := grow(fd, label)
	if err != nil {
		return g, fmt.Errorf("grow %s on %s: %w", label, diskPath, err)
	}
	if g.Grown {
		if err := fd.Sync(); err != nil {
			return g, fmt.Errorf("grow %s on %s: sync: %w", label, diskPath, err)
		}
	}
	return g, nil
}

func grow(fd *os.File, label string) (Growth, error) {
	diskSize, err := fd.Seek(0, 2)
	if err != nil {
		return Growth{}, fmt.Errorf("size: %w", err)
	}
	t, err := readPrimaryGPT(fd)
	if err != nil {
		return Growth{}, err
	}
	hdr, sector, entries := t.hdr, t.sector, t.entries

	found, lastEnd := -1, uint64(0)
	var start, end uint64
	for i := 0; i < int(hdr.numEntries); i++ {
		e := entries[i*int(hdr.entrySize) : (i+1)*int(hdr.entrySize)]
		if allZero(e[:16]) { // unused entry: zero type GUID
			continue
		}
		s, en := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		lastEnd = max(lastEnd, en)
		if entryName(e) == label {
			if found >= 0 {
				return Growth{}, fmt.Errorf("two partitions are named %s", label)
			}
			found, start, end = i, s, en
		}
	}
	if found < 0 {
		return Growth{}, fmt.Errorf("%w named %s in the GPT", ErrNotFound, label)
	}
	g := Growth{Index: found + 1, Start: int64(start) * sector, Size: int64(end-start+1) * sector, OldEnd: int64(end+1) * sector}
	if end != lastEnd {
		return g, nil // another partition follows: growing would overlap it
	}
	// What there is to gain first: a node calls Grow on every boot, and on all but the first
	// (or one after its disk was enlarged) the partition already reaches the end.
	entrySectors := (uint64(len(entries)) + uint64(sector) - 1) / uint64(sector)
	lastLBA := uint64(diskSize/sector) - 1
	lastUsable := lastLBA - entrySectors - 1
	if lastUsable <= end {
		return g, nil
	}
	perMiB := uint64(growAlign / sector)
	newEnd := start + (lastUsable-start+1)/perMiB*perMiB - 1
	if newEnd < end+perMiB {
		return g, nil // less than a MiB to gain: leave the table as it is
	}

	if g.Size < minSize {
		return g, nil
	}
	head, tail := make([]byte, blankProbe), make([]byte, recordSize)
	if _, err := fd.ReadAt(head, g.Start); err != nil {
		return g, fmt.Errorf("read partition %d: %w", g.Index, err)
	}
	if _, err := fd.ReadAt(tail, g.OldEnd-recordSize); err != nil {
		return g, fmt.Errorf("read partition %d: %w", g.Index, err)
	}
	if classify(head, tail, g.Size) == Other {
		return g, nil // data the node does not know: never moved
	}

	e := entries[found*int(hdr.entrySize):]
	binary.LittleEndian.PutUint64(e[40:], newEnd)
	crc := crc32.ChecksumIEEE(entries)

	// The old backup header and entries now lie inside the grown partition: clear them, so that
	// no tool finds a stale table there (a blank partition stays blank).
	oldAlt := hdr.altLBA
	oldAltEntries := oldAlt - entrySectors
	if oldAlt > end && oldAlt < lastLBA {
		zero := make([]byte, int64(entrySectors+1)*sector)
		if _, err := fd.WriteAt(zero, int64(oldAltEntries)*sector); err != nil {
			return g, fmt.Errorf("clear old backup GPT: %w", err)
		}
	}

	// Backup first, primary last: until the primary is rewritten, the disk reads as before.
	backup := hdr
	backup.myLBA, backup.altLBA = lastLBA, 1
	backup.entriesLBA = lastLBA - entrySectors
	backup.lastUsable, backup.entriesCRC32 = lastUsable, crc
	if _, err := fd.WriteAt(entries, int64(backup.entriesLBA)*sector); err != nil {
		return g, fmt.Errorf("write backup GPT entries: %w", err)
	}
	if _, err := fd.WriteAt(backup.encode(), int64(lastLBA)*sector); err != nil {
		return g, fmt.Errorf("write backup GPT header: %w", err)
	}
	if _, err := fd.WriteAt(entries, int64(hdr.entriesLBA)*sector); err != nil {
		return g, fmt.Errorf("write GPT entries: %w", err)
	}
	primary := hdr
	primary.altLBA, primary.lastUsable, primary.entriesCRC32 = lastLBA, lastUsable, crc
	if _, err := fd.WriteAt(primary.encode(), sector); err != nil {
		return g, fmt.Errorf("write GPT header: %w", err)
	}
	if err := fixProtectiveMBR(fd, lastLBA); err != nil {
		return g, err
	}
	g.Size = int64(newEnd-start+1) * sector
	g.Grown = true
	return g, nil
}

// fixProtectiveMBR makes the protective MBR's 0xEE entry cover the whole grown disk, as the UEFI
// spec asks (capped at what 32 bits can say).
func fixProtectiveMBR(fd *os.File, lastLBA uint64) error {
	mbr := make([]byte, 512)
	if _, err := fd.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("read protective MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil
	}
	for i := 0; i < 4; i++ {
		p := mbr[446+16*i:]
		if p[4] != 0xEE {
			continue
		}
		size := min(lastLBA, 0xFFFFFFFF)
		binary.LittleEndian.PutUint32(p[12:], uint32(size))
		if _, err := fd.WriteAt(mbr, 0); err != nil {
			return fmt.Errorf("write protective MBR: %w", err)
		}
		return nil
	}
	return nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// wholeDisk returns the device node of the disk holding partition dev (/dev/vda2 → /dev/vda) and
// the partition's number, from sysfs: /sys/class/block/vda2 links into the disk's directory.
func wholeDisk(sysBlock, devDir, dev string) (string, int, error) {
	name := filepath.Base(dev)
	real, err := filepath.EvalSymlinks(filepath.Join(sysBlock, name))
	if err != nil {
		return "", 0, fmt.Errorf("find the disk of %s: %w", dev, err)
	}
	raw, err := os.ReadFile(filepath.Join(real, "partition"))
	if err != nil {
		return "", 0, fmt.Errorf("find the disk of %s: %w", dev, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return "", 0, fmt.Errorf("find the disk of %s: partition number %q: %w", dev, raw, err)
	}
	return filepath.Join(devDir, filepath.Base(filepath.Dir(real))), n, nil
}

// resizePartition tells the kernel the partition's new extent (BLKPG_RESIZE_PARTITION), which,
// unlike re-reading the whole table (BLKRRPART), works while another partition of the disk is
// in use.
func resizePartition(disk string, g Growth) error {
	fd, err := os.OpenFile(disk, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("resize partition %d of %s: %w", g.Index, disk, err)
	}
	defer fd.Close()
	part := unix.BlkpgPartition{Start: g.Start, Length: g.Size, Pno: int32(g.Index)}
	arg := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(part)),
		Data:    (*byte)(unsafe.Pointer(&part)),
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); errno != 0 {
		return fmt.Errorf("resize partition %d of %s (BLKPG): %w", g.Index, disk, errno)
	}
	return nil
}
