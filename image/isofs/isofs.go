// Package isofs reads files off an ISO 9660 volume without the kernel: the root directory's
// files, by their Rock Ridge or ISO names, as sections of the volume.
package isofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// blockSize is ISO 9660's logical block.
const blockSize = 2048

// Open finds the file named name in the root directory of the ISO 9660 filesystem in r and
// returns its bytes as a section of r. Names are matched as Rock Ridge gives them (NM entries)
// or, without Rock Ridge, as the ISO name without its ";1" version, case-insensitively. ISO 9660
// files below 4 GiB are one contiguous extent, so no copy is made: this is how the node's
// installer reads the image off its medium without the kernel's isofs.
func Open(r io.ReaderAt, name string) (*io.SectionReader, error) {
	pvd := make([]byte, blockSize)
	if _, err := r.ReadAt(pvd, 16*blockSize); err != nil {
		return nil, fmt.Errorf("isofs: primary volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return nil, errors.New("isofs: no ISO 9660 primary volume descriptor in block 16")
	}
	root := pvd[156 : 156+34]
	lba, size := int64(binary.LittleEndian.Uint32(root[2:])), int64(binary.LittleEndian.Uint32(root[10:]))
	if size <= 0 || size > 16<<20 {
		return nil, fmt.Errorf("isofs: root directory of %d bytes", size)
	}
	dir := make([]byte, size)
	if _, err := r.ReadAt(dir, lba*blockSize); err != nil {
		return nil, fmt.Errorf("isofs: root directory: %w", err)
	}
	for off := 0; off < len(dir); {
		n := int(dir[off])
		if n == 0 { // records do not cross a block: the rest of this one is padding
			off = (off/blockSize + 1) * blockSize
			continue
		}
		if n < 34 || off+n > len(dir) {
			return nil, fmt.Errorf("isofs: bad directory record at %d", off)
		}
		rec := dir[off : off+n]
		off += n
		nameLen := int(rec[32])
		if 33+nameLen > len(rec) || rec[25]&2 != 0 { // a directory
			continue
		}
		isoName := string(rec[33 : 33+nameLen])
		su := rec[33+nameLen+(1-nameLen%2):] // the system use area follows the name, padded to even
		if rrName, ok := rockRidgeName(su); ok && rrName == name ||
			strings.EqualFold(strings.TrimSuffix(strings.TrimSuffix(isoName, ";1"), "."), name) {
			start, length := int64(binary.LittleEndian.Uint32(rec[2:])), int64(binary.LittleEndian.Uint32(rec[10:]))
			return io.NewSectionReader(r, start*blockSize, length), nil
		}
	}
	return nil, fmt.Errorf("isofs: no file %q in the root directory", name)
}

// rockRidgeName reads the NM (alternate name) entries of a system use area.
func rockRidgeName(su []byte) (string, bool) {
	var name []byte
	found := false
	for len(su) >= 4 {
		sig, n := string(su[:2]), int(su[2])
		if n < 4 || n > len(su) {
			break
		}
		if sig == "NM" && n >= 5 {
			name = append(name, su[5:n]...)
			found = true
		}
		su = su[n:]
	}
	return string(name), found
}
