// Package disk writes the node's GPT disk image: an EFI system partition (FAT32) holding
// systemd-boot and the A/B slots, and a blank INGOT-STATE partition that the node formats on first
// boot. The image is written to a temporary file and renamed into place, so a failed build never
// leaves a half-written disk behind, and every identifier is derived from the content so the
// same inputs give the same bytes.
package disk

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
)

// Partition names, read by the node (GPT PARTNAME) and by humans (lsblk).
const (
	ESPName   = "INGOT-ESP"
	StateName = "INGOT-STATE"
)

const (
	mib        = 1 << 20
	sectorSize = 512
	// go-diskfs' FAT32 writer and some firmware misbehave on small ESPs.
	MinESPMiB   = 100
	MinStateMiB = 64
)

// Layout sizes the partitions.
type Layout struct {
	ESPMiB   int
	StateMiB int
	// Epoch is the time stamped on every ESP file (seconds since 1970); FAT cannot store times
	// before 1980, so earlier values are raised to 1980-01-01.
	Epoch int64
}

// fatEpoch is 1980-01-01T00:00:00Z, the earliest time a FAT directory entry can hold.
const fatEpoch = 315532800

// envMu serialises the SOURCE_DATE_EPOCH override below: go-diskfs reads the FAT timestamps from
// that environment variable and offers no other way to set them.
var envMu sync.Mutex

// File is one file placed on the ESP. Path uses forward slashes, relative to the ESP root.
type File struct {
	Path string
	Data []byte
}

// Write creates the disk image at dst.
func Write(dst string, layout Layout, files []File) error {
	if layout.ESPMiB < MinESPMiB {
		return fmt.Errorf("disk %s: ESP of %d MiB is below the minimum of %d MiB", dst, layout.ESPMiB, MinESPMiB)
	}
	if layout.StateMiB < MinStateMiB {
		return fmt.Errorf("disk %s: state partition of %d MiB is below the minimum of %d MiB", dst, layout.StateMiB, MinStateMiB)
	}
	var need int64
	for _, f := range files {
		need += int64(len(f.Data))
	}
	if need > int64(layout.ESPMiB)*mib*9/10 {
		return fmt.Errorf("disk %s: ESP files need %d MiB, more than fits in a %d MiB ESP", dst, need/mib+1, layout.ESPMiB)
	}

	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	os.Remove(tmp)
	envMu.Lock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(max(layout.Epoch, fatEpoch), 10))
	err := write(tmp, layout, files)
	if had {
		os.Setenv("SOURCE_DATE_EPOCH", old)
	} else {
		os.Unsetenv("SOURCE_DATE_EPOCH")
	}
	envMu.Unlock()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("disk %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("disk %s: %w", dst, err)
	}
	return nil
}

// guid derives a stable, RFC 4122-shaped identifier from the content and a role.
func guid(seed []byte, role string) string {
	h := sha256.Sum256(append([]byte(role+"\x00"), seed...))
	u, _ := uuid.FromBytes(h[:16])
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return strings.ToUpper(u.String())
}

func write(tmp string, layout Layout, files []File) error {
	seedHash := sha256.New()
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		fmt.Fprintf(seedHash, "%s\x00%d\x00", f.Path, len(f.Data))
		seedHash.Write(f.Data)
	}
	seed := seedHash.Sum(nil)

	const first = mib / sectorSize // 1 MiB aligned start
	espSectors := uint64(layout.ESPMiB) * mib / sectorSize
	stateSectors := uint64(layout.StateMiB) * mib / sectorSize
	size := int64(first+espSectors+stateSectors)*sectorSize + mib // room for the backup GPT

	d, err := diskfs.Create(tmp, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	defer d.Close()
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               guid(seed, "disk"),
		Partitions: []*gpt.Partition{
			{Index: 1, Start: first, End: first + espSectors - 1, Type: gpt.EFISystemPartition, Name: ESPName, GUID: guid(seed, "esp")},
			{Index: 2, Start: first + espSectors, End: first + espSectors + stateSectors - 1, Type: gpt.LinuxFilesystem, Name: StateName, GUID: guid(seed, "state")},
		},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("write partition table: %w", err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "INGOT-ESP", Reproducible: true})
	if err != nil {
		return fmt.Errorf("format ESP: %w", err)
	}
	return fillFAT(fs, sorted)
}

// fillFAT writes files into a FAT filesystem, making their directories.
func fillFAT(fs filesystem.FileSystem, files []File) error {
	made := map[string]bool{}
	for _, f := range files {
		p := "/" + strings.TrimPrefix(path.Clean(f.Path), "/")
		dir := path.Dir(p)
		if dir != "/" && !made[dir] {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("FAT mkdir %s: %w", dir, err)
			}
			for d := dir; d != "/"; d = path.Dir(d) {
				made[d] = true
			}
		}
		fd, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("FAT create %s: %w", p, err)
		}
		if _, err := fd.Write(f.Data); err != nil {
			fd.Close()
			return fmt.Errorf("FAT write %s: %w", p, err)
		}
		if err := fd.Close(); err != nil {
			return fmt.Errorf("FAT close %s: %w", p, err)
		}
	}
	return nil
}

// WriteFAT writes a FAT32 filesystem image without a partition table at dst, big enough for
// files (and at least MinESPMiB), labelled label: an ESP to embed in an ISO. Written to a
// temporary file and renamed into place, with the same reproducible times as Write.
func WriteFAT(dst, label string, epoch int64, files []File) (int64, error) {
	var need int64
	for _, f := range files {
		need += int64(len(f.Data))
	}
	sizeMiB := max(MinESPMiB, int(need*11/10/mib)+8)
	size := int64(sizeMiB) * mib
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	os.Remove(tmp)
	envMu.Lock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(max(epoch, fatEpoch), 10))
	err := func() error {
		d, err := diskfs.Create(tmp, size, diskfs.SectorSizeDefault)
		if err != nil {
			return err
		}
		defer d.Close()
		fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: label, Reproducible: true})
		if err != nil {
			return err
		}
		return fillFAT(fs, sorted)
	}()
	if had {
		os.Setenv("SOURCE_DATE_EPOCH", old)
	} else {
		os.Unsetenv("SOURCE_DATE_EPOCH")
	}
	envMu.Unlock()
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("FAT image %s: %w", dst, err)
	}
	return size, nil
}
