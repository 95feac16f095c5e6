package oci

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// MaxID is the largest uid or gid a process can have: 2^32-1 is (uid_t)-1, which setresuid(2)
// and chown(2) read as "leave unchanged", so it is nobody's id.
const MaxID = 1<<32 - 2

// ParseID reads a uid or gid written in decimal. isID is false for a name. Text that looks like
// a number — digits after at most one sign — but is not in 0..MaxID is an error, never a name:
// otherwise an image whose /etc/passwd has a line "-1:x:0:0::/:/bin/sh" turns a uid of -1, which
// a non-root check lets through, into root.
func ParseID(s string) (id uint32, isID bool, err error) {
	digits := s
	if digits != "" && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(s, 10, 32) // refuses a sign
	if err != nil || v > MaxID {
		return 0, false, fmt.Errorf("%q is not an id between 0 and %d", s, MaxID)
	}
	return uint32(v), true, nil
}

// checkID checks a uid or gid the security context gives as a number.
func checkID(field, kind string, v int64) (uint32, error) {
	if v < 0 || v > MaxID {
		return 0, fmt.Errorf("%s %d: a %s must be between 0 and %d", field, v, kind, MaxID)
	}
	return uint32(v), nil
}

// setUser resolves the container's user: the security context's uid/username wins over the
// image's User ("name", "uid", "name:group", "uid:gid"); names are looked up in the container's
// own /etc/passwd and /etc/group.
func setUser(s *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext, imageUser, rootfs string) error {
	// CRI: run_as_group is only valid with run_as_user or run_as_username.
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return fmt.Errorf("run_as_group %d is set without run_as_user or run_as_username", sc.GetRunAsGroup().GetValue())
	}
	user := imageUser
	if sc.GetRunAsUsername() != "" {
		user = sc.GetRunAsUsername()
	}
	if v := sc.GetRunAsUser(); v != nil {
		id, err := checkID("run_as_user", "uid", v.GetValue())
		if err != nil {
			return err
		}
		user = strconv.FormatUint(uint64(id), 10)
	}
	name, group, _ := strings.Cut(user, ":")
	uid, gid := uint32(0), uint32(0)
	uname := ""
	if name != "" {
		id, isID, err := ParseID(name)
		switch {
		case err != nil:
			return fmt.Errorf("user %q: not a uid between 0 and %d, and not a name", name, MaxID)
		case isID:
			uid = id
			if e, ok := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.uid == id }); ok {
				gid, uname = e.gid, e.name
			}
		default:
			e, ok := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.name == name })
			if !ok {
				return fmt.Errorf("user %q not found in the image's /etc/passwd", name)
			}
			uid, gid, uname = e.uid, e.gid, e.name
		}
	}
	if group != "" {
		id, isID, err := ParseID(group)
		switch {
		case err != nil:
			return fmt.Errorf("group %q: not a gid between 0 and %d, and not a name", group, MaxID)
		case isID:
			gid = id
		default:
			g, ok := lookupGroup(rootfs, group)
			if !ok {
				return fmt.Errorf("group %q not found in the image's /etc/group", group)
			}
			gid = g
		}
	}
	if v := sc.GetRunAsGroup(); v != nil {
		id, err := checkID("run_as_group", "gid", v.GetValue())
		if err != nil {
			return err
		}
		gid = id
	}
	s.Process.User = specs.User{UID: uid, GID: gid}
	seen := map[uint32]bool{gid: true}
	// Merge (the default) adds the groups the image's /etc/group gives the user; Strict only
	// those the security context names.
	if uname != "" && sc.GetSupplementalGroupsPolicy() != runtimeapi.SupplementalGroupsPolicy_Strict {
		for _, g := range memberOf(rootfs, uname) {
			if !seen[g] {
				seen[g] = true
				s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, g)
			}
		}
	}
	for _, v := range sc.GetSupplementalGroups() {
		g, err := checkID("supplemental group", "gid", v)
		if err != nil {
			return err
		}
		if !seen[g] {
			seen[g] = true
			s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, g)
		}
	}
	if uname != "" || uid == 0 {
		home := "/"
		if e, ok := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.uid == uid }); ok && e.home != "" {
			home = e.home
		}
		hasHome := false
		for _, kv := range s.Process.Env {
			if strings.HasPrefix(kv, "HOME=") {
				hasHome = true
			}
		}
		if !hasHome {
			s.Process.Env = append(s.Process.Env, "HOME="+home)
		}
	}
	return nil
}

type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

// readDB reads a colon-separated database file inside the rootfs, never following a symlink out
// of it. Only a regular file counts: image layers may hold FIFOs and device nodes, and opening a
// FIFO would block CreateContainer (hence O_NONBLOCK on the open).
func readDB(rootfs, rel string, each func(f []string) bool) {
	p, err := securePath(rootfs, rel)
	if err != nil {
		return
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if each(strings.Split(line, ":")) {
			return
		}
	}
}

// lookupPasswd returns the first entry of the image's /etc/passwd that match accepts. Entries
// whose uid or gid is not an id (negative, 2^32-1 or more, not a number) are skipped.
func lookupPasswd(rootfs string, match func(passwdEntry) bool) (passwdEntry, bool) {
	var out passwdEntry
	found := false
	readDB(rootfs, "etc/passwd", func(f []string) bool {
		if len(f) < 7 {
			return false
		}
		uid, ok1, _ := ParseID(f[2])
		gid, ok2, _ := ParseID(f[3])
		if !ok1 || !ok2 {
			return false
		}
		e := passwdEntry{name: f[0], uid: uid, gid: gid, home: f[5]}
		if !match(e) {
			return false
		}
		out, found = e, true
		return true
	})
	return out, found
}

// lookupGroup returns the gid of the image's group name; entries without a valid gid are skipped.
func lookupGroup(rootfs, name string) (uint32, bool) {
	var gid uint32
	found := false
	readDB(rootfs, "etc/group", func(f []string) bool {
		if len(f) < 3 || f[0] != name {
			return false
		}
		v, ok, _ := ParseID(f[2])
		if !ok {
			return false
		}
		gid, found = v, true
		return true
	})
	return gid, found
}

// memberOf returns the gids of the image's groups that list user as a member.
func memberOf(rootfs, user string) []uint32 {
	var out []uint32
	readDB(rootfs, "etc/group", func(f []string) bool {
		if len(f) < 4 {
			return false
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == user {
				if v, ok, _ := ParseID(f[2]); ok {
					out = append(out, v)
				}
			}
		}
		return false
	})
	return out
}
