// Package iso writes ingot.iso: a hybrid image that UEFI firmware boots both as a CD and as a
// USB stick. It is an ISO 9660 filesystem (go-diskfs) whose El Torito catalog names a FAT image,
// the ESP, for the EFI platform — what firmware boots from a CD — and whose system area (the
// first 32 KiB, which ISO 9660 leaves to the medium) holds a protective MBR and a GPT naming the
// same FAT image as an EFI system partition, with the backup GPT after the ISO's last block —
// what firmware boots from a disk. Both views read the same bytes, as xorriso's
// -isohybrid-gpt-basdat lays them out.
package iso

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/google/uuid"
)

const (
	isoBlock    = 2048
	sector      = 512
	gptEntries  = 128
	gptEntrySz  = 128
	gptSectors  = gptEntries * gptEntrySz / sector // 32
	espFileName = "/efiboot.img"
)

// espType is the EFI system partition's GPT type GUID.
var espType = uuid.MustParse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")

// Write makes the ISO at dst, labelled volumeID, booting the FAT image esp, and holding files
// (ISO path, as "/disk.qcow2", to a host file). It writes a sibling and renames it into place.
func Write(dst, volumeID, esp string, files map[string]string) error {
	if err := write(dst, volumeID, esp, files); err != nil {
		return fmt.Errorf("iso %s: %w", dst, err)
	}
	return nil
}

func write(dst, volumeID, esp string, files map[string]string) error {
	all := map[string]string{espFileName: esp}
	var size int64
	for p, host := range files {
		if !strings.HasPrefix(p, "/") || strings.Count(p, "/") != 1 {
			return fmt.Errorf("file %q: want a name in the ISO's root, as /name", p)
		}
		all[p] = host
	}
	for _, host := range all {
		st, err := os.Stat(host)
		if err != nil {
			return err
		}
		size += (st.Size() + isoBlock - 1) / isoBlock * isoBlock
	}
	size += 4 << 20 // descriptors, directories, catalog, and the backup GPT

	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	os.Remove(tmp)
	work, err := os.MkdirTemp(filepath.Dir(dst), ".iso-work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	err = func() error {
		d, err := diskfs.Create(tmp, size, diskfs.SectorSizeDefault)
		if err != nil {
			return err
		}
		defer d.Close()
		d.LogicalBlocksize = isoBlock
		fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, WorkDir: work})
		if err != nil {
			return err
		}
		names := make([]string, 0, len(all))
		for p := range all {
			names = append(names, p)
		}
		sort.Strings(names)
		for _, p := range names {
			if err := copyInto(fs, p, all[p]); err != nil {
				return err
			}
		}
		return fs.(*iso9660.FileSystem).Finalize(iso9660.FinalizeOptions{
			VolumeIdentifier: volumeID,
			RockRidge:        true, // names as given (disk.qcow2), not 8.3
			ElTorito: &iso9660.ElTorito{BootCatalog: "/BOOT.CAT", Entries: []*iso9660.ElToritoEntry{
				{Platform: iso9660.EFI, Emulation: iso9660.NoEmulation, BootFile: espFileName},
			}},
		})
	}()
	if err == nil {
		err = padVolumeID(tmp, volumeID)
	}
	if err == nil {
		err = hybrid(tmp, esp)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func copyInto(fs filesystem.FileSystem, p, host string) error {
	src, err := os.Open(host)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p, err)
	}
	return f.Close()
}

// padVolumeID pads the primary volume descriptor's identifier with spaces, as ISO 9660 has it
// (go-diskfs pads with NULs, which tools then show as part of the label).
func padVolumeID(path, volumeID string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	pvd := make([]byte, 8)
	if _, err := f.ReadAt(pvd, 16*isoBlock); err != nil {
		return err
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return errors.New("no primary volume descriptor in block 16")
	}
	id := []byte(fmt.Sprintf("%-32s", volumeID))[:32]
	if _, err := f.WriteAt(id, 16*isoBlock+40); err != nil {
		return err
	}
	return nil
}

// BootImage finds the El Torito boot image of the ISO in r: its offset in bytes, read from the
// boot record volume descriptor (block 17) and the catalog's default entry.
func BootImage(r io.ReaderAt) (int64, error) {
	brvd := make([]byte, isoBlock)
	if _, err := r.ReadAt(brvd, 17*isoBlock); err != nil {
		return 0, fmt.Errorf("boot record: %w", err)
	}
	if brvd[0] != 0 || string(brvd[1:6]) != "CD001" || !strings.HasPrefix(string(brvd[7:39]), "EL TORITO SPECIFICATION") {
		return 0, errors.New("no El Torito boot record in block 17")
	}
	catalog := int64(binary.LittleEndian.Uint32(brvd[0x47:]))
	entry := make([]byte, 64)
	if _, err := r.ReadAt(entry, catalog*isoBlock); err != nil {
		return 0, fmt.Errorf("boot catalog: %w", err)
	}
	if entry[0] != 1 || entry[0x1e] != 0x55 || entry[0x1f] != 0xaa || entry[32] != 0x88 {
		return 0, errors.New("boot catalog: no bootable default entry")
	}
	return int64(binary.LittleEndian.Uint32(entry[32+8:])) * isoBlock, nil
}

// hybrid writes the protective MBR and the GPTs that make the ISO a disk whose ESP is the FAT
// image the El Torito catalog boots.
func hybrid(path, esp string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	espStart, err := BootImage(f)
	if err != nil {
		return err
	}
	est, err := os.Stat(esp)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// The backup GPT goes after everything the ISO holds, on a sector boundary.
	end := (st.Size() + sector - 1) / sector
	total := end + gptSectors + 1
	if err := f.Truncate(total * sector); err != nil {
		return err
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%d %d %d", espStart, est.Size(), total)
	seed := sum.Sum(nil)
	diskGUID, partGUID := guid(seed, "disk"), guid(seed, "esp")

	first, last := espStart/sector, (espStart+est.Size()+sector-1)/sector-1
	entries := make([]byte, gptSectors*sector)
	putGUID(entries[0:], espType)
	putGUID(entries[16:], partGUID)
	binary.LittleEndian.PutUint64(entries[32:], uint64(first))
	binary.LittleEndian.PutUint64(entries[40:], uint64(last))
	for i, r := range "EFI system partition" {
		binary.LittleEndian.PutUint16(entries[56+2*i:], uint16(r))
	}
	entriesCRC := crc32.ChecksumIEEE(entries)

	header := func(self, other, entriesLBA int64) []byte {
		h := make([]byte, sector)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], uint64(self))
		binary.LittleEndian.PutUint64(h[32:], uint64(other))
		binary.LittleEndian.PutUint64(h[40:], 2+gptSectors)  // first usable
		binary.LittleEndian.PutUint64(h[48:], uint64(end-1)) // last usable: before the backup
		putGUID(h[56:], diskGUID)
		binary.LittleEndian.PutUint64(h[72:], uint64(entriesLBA))
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySz)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	mbr := make([]byte, sector)
	// One partition of type 0xEE covering the disk: "this disk has a GPT".
	p := mbr[446:]
	p[1], p[2], p[3] = 0, 2, 0
	p[4] = 0xee
	p[5], p[6], p[7] = 0xff, 0xff, 0xff
	binary.LittleEndian.PutUint32(p[8:], 1)
	binary.LittleEndian.PutUint32(p[12:], uint32(min(total-1, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xaa

	for _, w := range []struct {
		lba  int64
		data []byte
	}{
		{0, mbr},
		{1, header(1, total-1, 2)},
		{2, entries},
		{end, entries},
		{total - 1, header(total-1, 1, end)},
	} {
		if _, err := f.WriteAt(w.data, w.lba*sector); err != nil {
			return err
		}
	}
	return f.Sync()
}

// guid derives a stable, RFC 4122-shaped identifier from the layout and a role.
func guid(seed []byte, role string) uuid.UUID {
	h := sha256.Sum256(append([]byte(role+"\x00"), seed...))
	u, _ := uuid.FromBytes(h[:16])
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return u
}

// putGUID writes u in GPT's mixed-endian form: the first three fields little-endian.
func putGUID(b []byte, u uuid.UUID) {
	binary.LittleEndian.PutUint32(b[0:], binary.BigEndian.Uint32(u[0:4]))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(u[4:6]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(u[6:8]))
	copy(b[8:16], u[8:16])
}
