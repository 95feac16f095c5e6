package slots

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"

	"ingot.dev/ingot/init/statedisk"
)

// globalGUID is the UEFI global variables' vendor GUID (Boot####, BootOrder, BootNext).
const globalGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// espName is the ESP's GPT partition name in an ingot disk image (image/disk.ESPName).
const espName = "INGOT-ESP"

// BootDisk makes UEFI firmware boot disk's ESP next and from then on: a Boot#### load option
// (described "ingot", pointing at loader, e.g. \EFI\BOOT\BOOTX64.EFI, on the GPT partition named
// INGOT-ESP by its unique GUID), first in BootOrder and set as BootNext. The installer calls it
// before rebooting, since the medium it booted from would otherwise boot first again. An option
// already there for the same partition and loader is reused. It returns the option's number.
func BootDisk(efivars, disk, loader string) (uint16, error) {
	part, err := statedisk.FindPartition(disk, espName) // its error names the disk
	if err != nil {
		return 0, fmt.Errorf("boot: %w", err)
	}
	opt := loadOption("ingot", part, loader)
	num, err := optionNumber(efivars, opt)
	if err != nil {
		return 0, fmt.Errorf("boot %s: %w", disk, err)
	}
	name := fmt.Sprintf("Boot%04X", num)
	if err := setVar(efivars, name, opt); err != nil {
		return 0, err
	}
	var order []uint16
	if b, err := os.ReadFile(filepath.Join(efivars, "BootOrder-"+globalGUID)); err == nil && len(b) >= 4 {
		for i := 4; i+1 < len(b); i += 2 {
			if n := binary.LittleEndian.Uint16(b[i:]); n != num {
				order = append(order, n)
			}
		}
	}
	order = append([]uint16{num}, order...)
	if err := setVar(efivars, "BootOrder", u16s(order...)); err != nil {
		return 0, err
	}
	if err := setVar(efivars, "BootNext", u16s(num)); err != nil {
		return 0, err
	}
	return num, nil
}

// loadOption encodes an EFI_LOAD_OPTION: active, described, with a device path of the GPT
// partition (hard drive media path) and the loader's file path on it.
func loadOption(desc string, p statedisk.Partition, loader string) []byte {
	var path bytes.Buffer
	hd := make([]byte, 42)
	hd[0], hd[1] = 4, 1 // media device path, hard drive
	binary.LittleEndian.PutUint16(hd[2:], 42)
	binary.LittleEndian.PutUint32(hd[4:], uint32(p.Number))
	binary.LittleEndian.PutUint64(hd[8:], p.FirstLBA)
	binary.LittleEndian.PutUint64(hd[16:], p.Sectors)
	copy(hd[24:40], p.GUID[:])
	hd[40], hd[41] = 2, 2 // GPT, GUID signature
	path.Write(hd)
	file := ucs2(`\` + strings.TrimPrefix(strings.ReplaceAll(loader, "/", `\`), `\`))
	fp := make([]byte, 4, 4+len(file))
	fp[0], fp[1] = 4, 4 // media device path, file path
	binary.LittleEndian.PutUint16(fp[2:], uint16(4+len(file)))
	path.Write(append(fp, file...))
	path.Write([]byte{0x7f, 0xff, 4, 0}) // end of the device path
	out := make([]byte, 6)
	binary.LittleEndian.PutUint32(out, 1) // LOAD_OPTION_ACTIVE
	binary.LittleEndian.PutUint16(out[4:], uint16(path.Len()))
	out = append(out, ucs2(desc)...)
	return append(out, path.Bytes()...)
}

// optionNumber is the number of a Boot#### variable holding opt already, else the first free one
// from 0x0100 (below are the firmware's own habits).
func optionNumber(efivars string, opt []byte) (uint16, error) {
	used := map[uint16]bool{}
	names, _ := filepath.Glob(filepath.Join(efivars, "Boot[0-9A-F][0-9A-F][0-9A-F][0-9A-F]-"+globalGUID))
	for _, n := range names {
		var num uint16
		if _, err := fmt.Sscanf(filepath.Base(n)[4:8], "%04X", &num); err != nil {
			continue
		}
		used[num] = true
		if b, err := os.ReadFile(n); err == nil && len(b) > 4 && bytes.Equal(b[4:], opt) {
			return num, nil
		}
	}
	for n := uint16(0x0100); n < 0xffff; n++ {
		if !used[n] {
			return n, nil
		}
	}
	return 0, errors.New("no free Boot#### variable")
}

// setVar writes a global variable, non-volatile and visible to boot services and the OS.
func setVar(efivars, name string, data []byte) error {
	path := filepath.Join(efivars, name+"-"+globalGUID)
	if err := mutable(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("set %s: %w", name, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	// efivarfs takes a variable, attributes first, in a single write.
	_, err = f.Write(append([]byte{7, 0, 0, 0}, data...))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	return nil
}

func ucs2(s string) []byte {
	var b []byte
	for _, c := range utf16.Encode([]rune(s + "\x00")) {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return b
}

func u16s(v ...uint16) []byte {
	var b []byte
	for _, n := range v {
		b = binary.LittleEndian.AppendUint16(b, n)
	}
	return b
}
