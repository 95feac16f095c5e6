// Package slots keeps the two image slots on the ESP and their systemd-boot entries, the way an
// image swap needs them: a new image is written to the slot the node did not boot, verified, and
// only then given an entry, with a boot counter, that makes systemd-boot try it first. The node
// commits a slot that passed its health checks (drops the counter), and systemd-boot falls back to
// the other slot by itself when a trial slot's tries run out.
//
// The ESP as this package lays it out:
//
//	EFI/ingot/slot-a.efi, slot-b.efi      the unified kernel images
//	loader/entries/ingot-a.conf           a committed slot's entry
//	loader/entries/ingot-b+3.conf         a slot on trial: 3 tries left (systemd-boot counts down
//	                                      on every boot it starts: ingot-b+2-1.conf, …, ingot-b+0-3.conf)
//
// Entries carry `sort-key ingot` and `version GENERATION`, a number raised at every install and
// rollback. systemd-boot lists entries with tries left (or no counter) before those without,
// then by sort-key, then newest version first, and `default ingot-*` takes the first in that list:
// so the slot installed or chosen last boots, unless it is on trial and out of tries.
//
// A power cut at any moment leaves a bootable ESP: the target slot's entry is removed before its
// image is touched, the image is written under a temporary name, synced and checked against its
// sha256 before it is renamed into place, and its entry is written (also through a temporary name)
// only after that. The other slot, the one running, is never touched.
package slots

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Layout on the ESP.
const (
	EntriesDir = "loader/entries"
	UKIDir     = "EFI/ingot"
	// Tries is how many boots a new slot gets to pass its health checks.
	Tries = 3
)

// Slots are the two slot names.
var Slots = []string{"a", "b"}

// Other is the slot that is not s.
func Other(s string) string {
	if s == "a" {
		return "b"
	}
	return "a"
}

// UKIPath is slot s's image, relative to the ESP.
func UKIPath(s string) string { return UKIDir + "/slot-" + s + ".efi" }

// TrialName is the file name Install gives slot's new entry. systemd-boot (v252) names entries by
// their whole file name, counter included, so this is also the id LoaderEntryOneShot must carry.
func TrialName(slot string) string { return fmt.Sprintf("ingot-%s+%d.conf", slot, Tries) }

// Entry is one slot's boot loader entry.
type Entry struct {
	File       string // its file name in loader/entries
	Slot       string
	TriesLeft  int // -1 without a counter: a committed slot
	TriesDone  int
	Generation int    // the entry's version: the higher, the more preferred
	Title      string // includes the image's version
}

// CommittedName is the file name the entry has once committed: without a counter.
func (e Entry) CommittedName() string { return "ingot-" + e.Slot + ".conf" }

// Trial reports whether the entry still has a boot counter: installed, not yet committed.
func (e Entry) Trial() bool { return e.TriesLeft >= 0 }

// Bad reports whether a trial entry has run out of tries: systemd-boot boots it no more.
func (e Entry) Bad() bool { return e.TriesLeft == 0 }

// ParseName reads an entry file name: ingot-SLOT[+LEFT[-DONE]].conf. ok is false for files that
// are not slot entries.
func ParseName(name string) (slot string, left, done int, ok bool) {
	base, found := strings.CutSuffix(name, ".conf")
	if !found {
		return "", 0, 0, false
	}
	left, done = -1, -1
	if i := strings.IndexByte(base, '+'); i >= 0 {
		counter := base[i+1:]
		base = base[:i]
		l, d, hasDone := strings.Cut(counter, "-")
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return "", 0, 0, false
		}
		left, done = n, 0
		if hasDone {
			m, err := strconv.Atoi(d)
			if err != nil || m < 0 {
				return "", 0, 0, false
			}
			done = m
		}
	}
	slot, found = strings.CutPrefix(base, "ingot-")
	if !found || !slices.Contains(Slots, slot) {
		return "", 0, 0, false
	}
	return slot, left, done, true
}

// ESP is a mounted EFI system partition.
type ESP struct {
	Dir string
}

// Entries lists the slot entries, the one systemd-boot boots by default first (Preferred's
// order).
func (e ESP) Entries() ([]Entry, error) {
	des, err := os.ReadDir(filepath.Join(e.Dir, EntriesDir))
	if err != nil {
		return nil, fmt.Errorf("ESP entries: %w", err)
	}
	var out []Entry
	for _, de := range des {
		slot, left, done, ok := ParseName(de.Name())
		if !ok {
			continue
		}
		en := Entry{File: de.Name(), Slot: slot, TriesLeft: left, TriesDone: done}
		data, err := os.ReadFile(filepath.Join(e.Dir, EntriesDir, de.Name()))
		if err != nil {
			return nil, fmt.Errorf("ESP entry %s: %w", de.Name(), err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
			v = strings.TrimSpace(v)
			switch k {
			case "version":
				en.Generation, _ = strconv.Atoi(v)
			case "title":
				en.Title = v
			}
		}
		out = append(out, en)
	}
	slices.SortStableFunc(out, compare)
	return out, nil
}

// compare orders entries as systemd-boot does for ours (same sort-key, no machine-id): bad
// entries last, then the highest version (generation) first.
func compare(a, b Entry) int {
	if a.Bad() != b.Bad() {
		if a.Bad() {
			return 1
		}
		return -1
	}
	return b.Generation - a.Generation
}

// Preferred is the entry systemd-boot boots when nothing else is asked for, or false when no
// entry is bootable.
func Preferred(entries []Entry) (Entry, bool) {
	if len(entries) == 0 || entries[0].Bad() {
		return Entry{}, false
	}
	return entries[0], true
}

// Install writes the image read from r to slot, checks it against sum (hex sha256), and gives it
// an entry on trial (Tries tries) that systemd-boot prefers to every other. title names the image
// in the boot menu. On any error the slot is left without an entry (and so never booted) and the
// other slot untouched.
func (e ESP) Install(slot string, r io.Reader, sum, title string) error {
	if !slices.Contains(Slots, slot) {
		return fmt.Errorf("install: no slot %q", slot)
	}
	if len(sum) != 64 {
		return fmt.Errorf("install slot %s: sha256 %q is not 64 hex digits", slot, sum)
	}
	entries, err := e.Entries()
	if err != nil {
		return err
	}
	gen := 0
	for _, en := range entries {
		gen = max(gen, en.Generation)
	}
	// 1. The slot loses its entry before its image is touched.
	if err := e.removeEntries(slot, entries); err != nil {
		return err
	}
	// 2. The image, under a temporary name, synced, checked.
	uki := filepath.Join(e.Dir, UKIPath(slot))
	tmp := uki + ".new"
	if err := writeChecked(tmp, r, sum); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install slot %s: %w", slot, err)
	}
	if err := os.Rename(tmp, uki); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install slot %s: %w", slot, err)
	}
	if err := syncDir(filepath.Dir(uki)); err != nil {
		return fmt.Errorf("install slot %s: %w", slot, err)
	}
	// 3. Only now an entry points at it.
	name := TrialName(slot)
	if err := e.writeEntry(name, slot, gen+1, title); err != nil {
		return fmt.Errorf("install slot %s: %w", slot, err)
	}
	return nil
}

// Commit makes slot's trial entry permanent: the counter is dropped, so systemd-boot keeps
// booting it. Committing a slot that is not on trial does nothing.
func (e ESP) Commit(slot string) error {
	entries, err := e.Entries()
	if err != nil {
		return err
	}
	for _, en := range entries {
		if en.Slot != slot || !en.Trial() {
			continue
		}
		if err := os.Rename(filepath.Join(e.Dir, EntriesDir, en.File), filepath.Join(e.Dir, EntriesDir, en.CommittedName())); err != nil {
			return fmt.Errorf("commit slot %s: %w", slot, err)
		}
		return syncDir(filepath.Join(e.Dir, EntriesDir))
	}
	return nil
}

// MarkBad ends slot's trial at once: its entry is given no tries left, as if systemd-boot had
// used them all, so the next boot is the other slot's. The node does this when the slot failed
// its health checks for certain; the counter is for the boots where it cannot.
func (e ESP) MarkBad(slot string) error {
	entries, err := e.Entries()
	if err != nil {
		return err
	}
	for _, en := range entries {
		if en.Slot != slot || !en.Trial() || en.Bad() {
			continue
		}
		bad := fmt.Sprintf("ingot-%s+0-%d.conf", slot, en.TriesDone+en.TriesLeft)
		if err := os.Rename(filepath.Join(e.Dir, EntriesDir, en.File), filepath.Join(e.Dir, EntriesDir, bad)); err != nil {
			return fmt.Errorf("mark slot %s bad: %w", slot, err)
		}
		return syncDir(filepath.Join(e.Dir, EntriesDir))
	}
	return nil
}

// Prefer makes slot, which must hold an image with a committed entry, the one systemd-boot boots
// from now on: its entry is rewritten with the highest generation. The other slot keeps its entry
// (one rollback can be undone by another).
func (e ESP) Prefer(slot string) error {
	entries, err := e.Entries()
	if err != nil {
		return err
	}
	gen := 0
	var target *Entry
	for i, en := range entries {
		gen = max(gen, en.Generation)
		if en.Slot == slot {
			target = &entries[i]
		}
	}
	if target == nil {
		return fmt.Errorf("slot %s has no boot entry: nothing to go back to", slot)
	}
	if target.Trial() {
		return fmt.Errorf("slot %s was never committed (entry %s): it is not a known good image", slot, target.File)
	}
	if _, err := os.Stat(filepath.Join(e.Dir, UKIPath(slot))); err != nil {
		return fmt.Errorf("slot %s: %w", slot, err)
	}
	// Written under the same name through a temporary file: the entry is complete at every moment.
	return e.writeEntry(target.File, slot, gen+1, target.Title)
}

// RemoveBad deletes entries that ran out of tries (the slot's image stays until the next
// install overwrites it), so the ESP lists only slots that can boot.
func (e ESP) RemoveBad() ([]Entry, error) {
	entries, err := e.Entries()
	if err != nil {
		return nil, err
	}
	var removed []Entry
	for _, en := range entries {
		if en.Bad() {
			if err := os.Remove(filepath.Join(e.Dir, EntriesDir, en.File)); err != nil {
				return removed, fmt.Errorf("remove entry %s: %w", en.File, err)
			}
			removed = append(removed, en)
		}
	}
	if len(removed) > 0 {
		return removed, syncDir(filepath.Join(e.Dir, EntriesDir))
	}
	return nil, nil
}

func (e ESP) removeEntries(slot string, entries []Entry) error {
	removed := false
	for _, en := range entries {
		if en.Slot == slot {
			if err := os.Remove(filepath.Join(e.Dir, EntriesDir, en.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove entry %s: %w", en.File, err)
			}
			removed = true
		}
	}
	if removed {
		return syncDir(filepath.Join(e.Dir, EntriesDir))
	}
	return nil
}

func (e ESP) writeEntry(name, slot string, gen int, title string) error {
	dir := filepath.Join(e.Dir, EntriesDir)
	if title == "" {
		title = "ingot"
	}
	title = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, title)
	text := fmt.Sprintf("title %s (slot %s)\nsort-key ingot\nversion %d\nefi /%s\n", strings.TrimSuffix(title, " (slot "+slot+")"), slot, gen, UKIPath(slot))
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := writeSynced(tmp, []byte(text)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// writeChecked copies r to path, syncs it, and fails unless its sha256 is sum.
func writeChecked(path string, r io.Reader, sum string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("the ESP is full after %d bytes of the image: %w", n, err)
		}
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(sum) {
		return fmt.Errorf("image of %d bytes has sha256 %s, the manifest says %s: not installed", n, got, sum)
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
