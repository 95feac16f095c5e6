// Package configdrive writes and reads config drives: a small vfat or ISO 9660 volume labelled
// INGOT-CONFIG whose root holds node.toml, the per-node configuration a node reads at boot. The
// host CLI writes one (`ingot node-config drive`), `ingot qemu` attaches it, and the VM tests read
// it back. The bytes depend only on node.toml and the epoch, so the same inputs give the same
// image.
//
// It never validates node.toml (profiles/nodeconfig does) and never touches a real device.
package configdrive

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"ingot.dev/ingot/profiles/nodeconfig"
)

// Label is the volume label a node looks for; FileName the file it reads from the volume's root.
// A FAT label holds 11 characters, so on a vfat drive the label is Label cut to INGOT-CONFI.
const (
	Label    = "INGOT-CONFIG"
	FileName = "node.toml"
)

// Format is the filesystem of a config drive.
type Format string

// Formats: FAT (FAT12, which Linux mounts as vfat; small images need nothing bigger) and ISO 9660
// with Joliet names (what a virtual CD-ROM drive holds, like cloud-init's cidata).
const (
	VFAT Format = "vfat"
	ISO  Format = "iso"
)

// MaxSize bounds node.toml: what the node reads from any source (nodeconfig.MaxSize).
const MaxSize = nodeconfig.MaxSize

// fatEpoch is the earliest time FAT can store (1980-01-01).
const fatEpoch = 315532800

// envMu serialises the SOURCE_DATE_EPOCH override below: go-diskfs stamps FAT directory entries
// (the volume label's included) with that variable's time and offers no other way to set it.
var envMu sync.Mutex

// Write creates the config drive image dst in format f, holding data as node.toml. Every time
// stamp on the volume is epoch (seconds since 1970; raised to 1980 for FAT). The image is written
// to a temporary file and renamed into place.
func Write(dst string, f Format, data []byte, epoch int64) error {
	if len(data) > MaxSize {
		return fmt.Errorf("config drive %s: %s is %d bytes, more than the %d a config drive holds", dst, FileName, len(data), MaxSize)
	}
	tmp := dst + ".tmp"
	os.Remove(tmp)
	var err error
	switch f {
	case VFAT:
		err = writeFAT(tmp, data, max(epoch, fatEpoch))
	case ISO:
		err = writeISO(tmp, data, epoch)
	default:
		err = fmt.Errorf("unknown format %q (want %s or %s)", f, VFAT, ISO)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("config drive %s: %w", dst, err)
	}
	return nil
}

// fatSize sizes a FAT12 volume for n bytes of file: twice the file, at least 1 MiB, in 512 KiB
// steps. FAT12 with go-diskfs' cluster sizes holds 4 MiB files in volumes under 16 MiB.
func fatSize(n int) int64 {
	const step = 512 << 10
	s := max(int64(2*n)+step, 1<<20)
	return (s + step - 1) / step * step
}

func writeFAT(path string, data []byte, epoch int64) error {
	envMu.Lock()
	defer envMu.Unlock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch, 10))
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}()
	d, err := diskfs.Create(path, fatSize(len(data)), diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	defer d.Close()
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat12, VolumeLabel: Label, Reproducible: true})
	if err != nil {
		return fmt.Errorf("format FAT: %w", err)
	}
	if err := writeFile(fs, data); err != nil {
		return err
	}
	t := time.Unix(epoch, 0).UTC()
	if err := fs.Chtimes("/"+FileName, t, t, t); err != nil {
		return fmt.Errorf("time stamp %s: %w", FileName, err)
	}
	return nil
}

func writeISO(path string, data []byte, epoch int64) error {
	ws, err := os.MkdirTemp("", "ingot-configdrive-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ws)
	// An ISO 9660 volume is laid out from its workspace at Finalize; a few blocks beyond the file
	// hold the descriptors, path tables and directories.
	const block = 2048
	size := (int64(len(data))+block-1)/block*block + 64*block
	b, err := file.CreateFromPath(path, size)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	d, err := diskfs.OpenBackend(freshImage{b})
	if err != nil {
		b.Close()
		return fmt.Errorf("open image: %w", err)
	}
	defer d.Close()
	d.LogicalBlocksize = block
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: Label, WorkDir: ws})
	if err != nil {
		return fmt.Errorf("format ISO 9660: %w", err)
	}
	if err := writeFile(fs, data); err != nil {
		return err
	}
	// go-diskfs takes each entry's time from its workspace copy.
	t := time.Unix(epoch, 0)
	for _, p := range []string{filepath.Join(ws, FileName), ws} {
		if err := os.Chtimes(p, t, t); err != nil {
			return fmt.Errorf("time stamp workspace: %w", err)
		}
	}
	iso, ok := fs.(*iso9660.FileSystem)
	if !ok {
		return fmt.Errorf("format ISO 9660: got a %T", fs)
	}
	// Joliet rather than Rock Ridge: Rock Ridge records the workspace files' ctime, which no one
	// can set, so the bytes would differ from run to run. Joliet keeps the name node.toml.
	if err := iso.Finalize(iso9660.FinalizeOptions{Joliet: true, VolumeIdentifier: Label}); err != nil {
		return fmt.Errorf("finalize ISO 9660: %w", err)
	}
	return stampVolumeDescriptors(path, time.Unix(epoch, 0).UTC())
}

// stampVolumeDescriptors overwrites the dates go-diskfs writes into the primary and Joliet
// volume descriptors (ECMA-119 8.4.26-29) with t: it stamps them with the time of Finalize.
// Creation and modification become t; expiration and effective "not specified".
func stampVolumeDescriptors(path string, t time.Time) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	stamp := []byte(t.Format("20060102150405") + "00\x00")
	unset := []byte("0000000000000000\x00")
	const sector, first = 2048, 16
	for i := int64(first); ; i++ {
		vd := make([]byte, sector)
		if _, err := f.ReadAt(vd, i*sector); err != nil {
			return fmt.Errorf("read volume descriptor %d: %w", i, err)
		}
		if !bytes.Equal(vd[1:6], []byte("CD001")) {
			return fmt.Errorf("volume descriptor %d: no CD001 signature", i)
		}
		switch vd[0] {
		case 255: // set terminator
			return nil
		case 1, 2: // primary, supplementary (Joliet)
			if vd[0] == 1 {
				// go-diskfs pads the volume identifier with NULs; ECMA-119 pads a-characters
				// with spaces, as mkisofs and blkid expect.
				id := bytes.TrimRight(vd[40:72], "\x00 ")
				if _, err := f.WriteAt(append(id, bytes.Repeat([]byte(" "), 32-len(id))...), i*sector+40); err != nil {
					return fmt.Errorf("write volume descriptor %d: %w", i, err)
				}
			}
			dates := append(append(append(append([]byte{}, stamp...), stamp...), unset...), unset...)
			if _, err := f.WriteAt(dates, i*sector+813); err != nil {
				return fmt.Errorf("write volume descriptor %d: %w", i, err)
			}
		}
		if i > first+16 {
			return fmt.Errorf("no volume descriptor set terminator")
		}
	}
}

// freshImage is a newly created, all-zero image, on which writing zeros changes nothing, so its
// writer drops such writes. That undoes a go-diskfs v1.9.4 bug: ISO 9660 Finalize pads a file whose
// size is a multiple of the block size with a whole zero block, over the directory laid out after
// it, and the file vanishes from the Joliet tree.
type freshImage struct{ backend.Storage }

func (f freshImage) Writable() (backend.WritableFile, error) {
	w, err := f.Storage.Writable()
	if err != nil {
		return nil, err
	}
	return skipZeros{w}, nil
}

type skipZeros struct{ backend.WritableFile }

func (s skipZeros) WriteAt(p []byte, off int64) (int, error) {
	for _, c := range p {
		if c != 0 {
			return s.WritableFile.WriteAt(p, off)
		}
	}
	return len(p), nil
}

func writeFile(fs filesystem.FileSystem, data []byte) error {
	f, err := fs.OpenFile("/"+FileName, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("create %s: %w", FileName, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", FileName, err)
	}
	return f.Close()
}

// Read opens a config drive (an image file or a block device, either format) and returns its
// volume label and the content of node.toml. FAT labels hold 11 characters, so a vfat drive's
// label reads INGOT-CONFI.
func Read(path string) (label string, data []byte, err error) {
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return "", nil, fmt.Errorf("config drive %s: %w", path, err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		return "", nil, fmt.Errorf("config drive %s: no FAT or ISO 9660 volume: %w", path, err)
	}
	label = strings.TrimRight(fs.Label(), " \x00")
	f, err := fs.OpenFile("/"+FileName, os.O_RDONLY)
	if err != nil {
		return label, nil, fmt.Errorf("config drive %s: open %s: %w", path, FileName, err)
	}
	defer f.Close()
	data, err = io.ReadAll(f)
	if err != nil {
		return label, nil, fmt.Errorf("config drive %s: read %s: %w", path, FileName, err)
	}
	return label, data, nil
}
