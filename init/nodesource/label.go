package nodesource

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
)

// Filesystem types a node config volume may hold, as mount(2) names them.
const (
	FSVfat    = "vfat"
	FSISO9660 = "iso9660"
)

// fatLabelLen is the length of a FAT volume label.
const fatLabelLen = 11

// Volume is a block device and the label its filesystem carries.
type Volume struct {
	Dev    string // /dev/vdb
	FSType string // FSVfat or FSISO9660
	Label  string // without padding; "" when the volume has none
}

func (v Volume) String() string {
	return fmt.Sprintf("%s (%s %q)", v.Dev, v.FSType, v.Label)
}

// ProbeLabel reads the filesystem label of a FAT or ISO 9660 volume on dev. ok is false for
// anything else (ext4, a partition table, zeros): those are not config volumes.
func ProbeLabel(dev string) (v Volume, ok bool, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return Volume{}, false, fmt.Errorf("probe %s: %w", dev, err)
	}
	defer f.Close()
	if fs, label, ok := probeISO(f); ok {
		return Volume{Dev: dev, FSType: fs, Label: label}, true, nil
	}
	if label, ok := probeFAT(f); ok {
		return Volume{Dev: dev, FSType: FSVfat, Label: label}, true, nil
	}
	return Volume{}, false, nil
}

// probeISO reads the primary volume descriptor: sector 16 (byte 32768), type 1, "CD001", and the
// volume identifier at offset 40 (32 characters, space padded).
func probeISO(r io.ReaderAt) (string, string, bool) {
	pvd := make([]byte, 72)
	if _, err := r.ReadAt(pvd, 32768); err != nil {
		return "", "", false
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return "", "", false
	}
	return FSISO9660, strings.TrimRight(string(pvd[40:72]), " \x00"), true
}

// probeFAT reads a FAT12/16/32 volume's label. The root directory's volume-label entry is what
// Linux and Windows show and what `fatlabel` changes; the boot sector's copy (offset 0x2b on
// FAT12/16, 0x47 on FAT32) is the fallback when the root directory has none.
func probeFAT(r io.ReaderAt) (string, bool) {
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return "", false
	}
	if bs[510] != 0x55 || bs[511] != 0xAA {
		return "", false
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(bs[0x0b:]))
	spc := int64(bs[0x0d])
	reserved := int64(le.Uint16(bs[0x0e:]))
	fats := int64(bs[0x10])
	rootEntries := int64(le.Uint16(bs[0x11:]))
	spf := int64(le.Uint16(bs[0x16:]))
	if bps != 512 && bps != 1024 && bps != 2048 && bps != 4096 || spc == 0 || fats == 0 || reserved == 0 {
		return "", false
	}
	var bootLabel []byte
	var rootOff, rootLen int64
	if spf != 0 { // FAT12/16: a fixed root directory after the FATs
		if string(bs[0x36:0x39]) != "FAT" && bs[0x26] != 0x29 && bs[0x26] != 0x28 {
			return "", false
		}
		if bs[0x26] == 0x29 {
			bootLabel = bs[0x2b : 0x2b+11]
		}
		rootOff = (reserved + fats*spf) * bps
		rootLen = rootEntries * 32
	} else { // FAT32: the root directory is a cluster chain; its first cluster is enough here
		if string(bs[0x52:0x57]) != "FAT32" {
			return "", false
		}
		if bs[0x42] == 0x29 {
			bootLabel = bs[0x47 : 0x47+11]
		}
		spf32 := int64(le.Uint32(bs[0x24:]))
		rootCluster := int64(le.Uint32(bs[0x2c:]))
		if rootCluster < 2 {
			return "", false
		}
		rootOff = (reserved+fats*spf32)*bps + (rootCluster-2)*spc*bps
		rootLen = spc * bps
	}
	rootLen = min(rootLen, 64<<10)
	root := make([]byte, rootLen)
	n, _ := r.ReadAt(root, rootOff)
	if label, ok := rootDirLabel(root[:n]); ok {
		return label, true
	}
	return fatName(bootLabel), true
}

// rootDirLabel finds the volume-label entry (attribute 0x08, not a long-name entry) among the
// 32-byte directory entries.
func rootDirLabel(dir []byte) (string, bool) {
	for i := 0; i+32 <= len(dir); i += 32 {
		e := dir[i : i+32]
		switch {
		case e[0] == 0x00:
			return "", false // end of directory
		case e[0] == 0xe5:
			continue // deleted
		case e[11] == 0x0f:
			continue // long file name
		case e[11]&0x08 != 0:
			return fatName(e[:11]), true
		}
	}
	return "", false
}

// fatName trims a space-padded 11-byte label; "NO NAME" is how formatters spell "no label".
func fatName(b []byte) string {
	s := string(bytes.TrimRight(b, " \x00"))
	if s == "NO NAME" {
		return ""
	}
	return s
}
