package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// EFIVars is where efivarfs is mounted.
const EFIVars = "/sys/firmware/efi/efivars"

// loaderGUID is systemd-boot's vendor GUID for the variables it shares with the OS (the Boot
// Loader Interface).
const loaderGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// Booted is the boot loader entry systemd-boot started this boot with (its LoaderEntrySelected
// variable), or ok false when the node was not booted by systemd-boot (a direct kernel boot, or
// efivarfs missing).
func Booted(efivars string) (entry string, ok bool) {
	return efiString(filepath.Join(efivars, "LoaderEntrySelected-"+loaderGUID))
}

// UEFI reports whether the node was started by UEFI firmware.
func UEFI(efivars string) bool {
	_, err := os.Stat(filepath.Dir(efivars))
	return err == nil
}

// SetOneShot asks systemd-boot to boot entry id at the next boot only (LoaderEntryOneShot). id
// is the entry's file name as it is on the ESP, counter included: that is how systemd-boot v252
// names entries, and it deletes the variable when it reads it, matching or not.
func SetOneShot(efivars, id string) error {
	path := filepath.Join(efivars, "LoaderEntryOneShot-"+loaderGUID)
	u := utf16.Encode([]rune(id + "\x00"))
	data := []byte{7, 0, 0, 0} // non-volatile, boot service and runtime access
	for _, c := range u {
		data = append(data, byte(c), byte(c>>8))
	}
	// efivarfs makes existing variables immutable; the flag must go before the variable can be
	// replaced.
	if err := mutable(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("set LoaderEntryOneShot: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("set LoaderEntryOneShot: %w", err)
	}
	// efivarfs takes a variable in a single write.
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("set LoaderEntryOneShot: %w", err)
	}
	return nil
}

// fsImmutable is FS_IMMUTABLE_FL from linux/fs.h (x/sys/unix does not name it).
const fsImmutable = 0x10

func mutable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if flags&fsImmutable == 0 {
		return nil
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutable))
}

// efiString reads an EFI variable holding a NUL-terminated UTF-16LE string, after efivarfs'
// 4-byte attributes.
func efiString(path string) (string, bool) {
	data, err := os.ReadFile(path)
	if err != nil || len(data) < 4 {
		return "", false
	}
	data = data[4:]
	u := make([]uint16, 0, len(data)/2)
	for i := 0; i+1 < len(data); i += 2 {
		c := uint16(data[i]) | uint16(data[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u)), true
}
