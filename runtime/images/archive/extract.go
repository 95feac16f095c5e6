package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh." // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not layer content
	whiteoutOpaque = ".wh..wh..opq"
)

// extractor writes entries below rootfd. Every path is walked one component at a time with
// O_NOFOLLOW, so no symlink is ever followed, whatever the tar stream put there before. Only the
// extractor writes into its (fresh, private) directory, so a component checked once stays checked.
type extractor struct {
	root        string
	rootfd      int
	privileged  bool
	opaqueXattr string
	limits      Limits
	// dirs holds the mode and times of each directory entry, applied once every child exists. It
	// is keyed by inode, not path: paths of a deep tree add up to the square of its depth.
	dirs      map[inodeKey]dirMeta
	walk      dirStack
	fileBytes int64 // sizes of the regular files so far, as their headers declare them
	size      int64
	inodes    int64
}

type inodeKey struct{ dev, ino uint64 }

func keyOf(st *unix.Stat_t) inodeKey { return inodeKey{uint64(st.Dev), st.Ino} }

// dirStack holds O_PATH descriptors of the directories on the path of the last entry, so that the
// next entry, which in a tar stream is nearly always in the same or a neighbouring directory, is
// reached by opening only the components that differ, not its whole path from the root (that made
// a layer of n nested directories cost n²/2 lookups). Descriptors are kept for the deepest
// maxStackFDs levels only; an entry outside them is walked from the root.
type dirStack struct {
	names []string
	fds   []int // fds[i] is the directory names[:i+1]; -1 below lo
	lo    int   // fds[lo:] are open
}

const maxStackFDs = 64

// top returns the descriptor of the deepest directory, or -1 when none is open.
func (s *dirStack) top() int {
	if len(s.fds) == 0 || s.lo >= len(s.fds) {
		return -1
	}
	return s.fds[len(s.fds)-1]
}

// truncate keeps the first n levels.
func (s *dirStack) truncate(n int) {
	for i := len(s.fds) - 1; i >= n; i-- {
		if s.fds[i] >= 0 {
			unix.Close(s.fds[i])
		}
	}
	s.names, s.fds = s.names[:n], s.fds[:n]
	s.lo = min(s.lo, n)
}

// push adds the next level, closing the shallowest descriptor when too many are open.
func (s *dirStack) push(name string, fd int) {
	s.names, s.fds = append(s.names, name), append(s.fds, fd)
	if len(s.fds)-s.lo > maxStackFDs {
		unix.Close(s.fds[s.lo])
		s.fds[s.lo] = -1
		s.lo++
	}
}

// shared returns how many leading components of rel are the stack's first levels, and the rest.
func (s *dirStack) shared(rel string) (n int, rest string) {
	rest = rel
	for n < len(s.names) && rest != "" {
		c, tail, _ := strings.Cut(rest, "/")
		if c != s.names[n] {
			break
		}
		n, rest = n+1, tail
	}
	return n, rest
}

// forget drops rel and everything below it: the directory is being removed.
func (s *dirStack) forget(rel string) {
	if n, rest := s.shared(rel); rest == "" {
		s.truncate(n - 1)
	}
}

type dirMeta struct {
	mode         uint32
	atime, mtime time.Time
}

func newExtractor(root string, privileged bool, opts Options) (*extractor, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	x := &extractor{root: root, rootfd: fd, privileged: privileged, opaqueXattr: "trusted.overlay.opaque", limits: opts.Limits.WithDefaults(), dirs: map[inodeKey]dirMeta{}}
	if opts.UserXattr {
		x.opaqueXattr = "user.overlay.opaque"
	}
	return x, nil
}

func (x *extractor) close() {
	x.walk.truncate(0)
	unix.Close(x.rootfd)
}

// openDir returns an O_PATH descriptor of the directory rel (cleaned, relative to the root),
// creating missing components (mode 0755) when create is set; the caller closes it. A component
// that is a symlink is rejected: a tar stream from a real filesystem never has entries below a
// symlink. The walk starts from the deepest directory the last walk shares with this one.
func (x *extractor) openDir(rel string, create bool) (int, error) {
	s := &x.walk
	n, rest := s.shared(rel)
	s.truncate(n)
	if s.top() < 0 {
		s.truncate(0) // the shared levels have no open descriptor left: from the root
		rest = rel
	}
	for rest != "" {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		walked := strings.TrimSuffix(rel[:len(rel)-len(rest)], "/")
		fd := s.top()
		if fd < 0 {
			fd = x.rootfd
		}
		nfd, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err := unix.Mkdirat(fd, c, 0o755); err != nil {
				return -1, fmt.Errorf("create parent %q: %w", walked, err)
			}
			x.inodes++
			if err := unix.Fchmodat(fd, c, 0o755, 0); err != nil { // not whatever the umask left
				return -1, fmt.Errorf("create parent %q: %w", walked, err)
			}
			nfd, err = unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			var st unix.Stat_t
			if err == nil && unix.Fstat(nfd, &st) == nil {
				delete(x.dirs, keyOf(&st)) // a removed directory's inode, reused: not its metadata
			}
		}
		if err != nil {
			var st unix.Stat_t
			isLink := unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
			if isLink {
				return -1, fmt.Errorf("%w: parent %q is a symlink and would be followed", ErrRejected, walked)
			}
			return -1, fmt.Errorf("open parent %q: %w", walked, err)
		}
		s.push(strings.Clone(c), nfd) // not a slice of rel, which would keep every entry's path alive
	}
	fd := s.top()
	if fd < 0 {
		fd = x.rootfd
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open parent %q: %w", rel, err)
	}
	return nfd, nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		if hdr.Typeflag == tar.TypeDir {
			return nil // the layer root keeps 0755, as in containerd
		}
		return fmt.Errorf("%w: entry would replace the layer root", ErrRejected)
	}
	if err := x.limits.checkPath(rel); err != nil {
		return err
	}
	dir, base := split(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return x.whiteout(hdr, dir, base)
	}
	parent, err := x.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)

	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.mkdir(parent, rel, base, hdr)
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return x.file(parent, rel, base, hdr, r)
	case tar.TypeSymlink:
		return x.symlink(parent, rel, base, hdr)
	case tar.TypeLink:
		return x.hardlink(parent, rel, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return x.node(parent, rel, base, hdr)
	default:
		return fmt.Errorf("%w: unsupported entry type %q", ErrRejected, hdr.Typeflag)
	}
}

// clear frees base in parent for a new entry: an existing non-directory is unlinked, an existing
// directory is removed with its subtree (tar's overwrite semantics). Keeping is the caller's choice.
func (x *extractor) clear(parent int, rel, base string) error {
	var st unix.Stat_t
	err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat existing entry: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(parent, base, 0)
	}
	x.walk.forget(rel)
	// Every component of rel was walked without following symlinks, and os.RemoveAll itself
	// works with *at calls, so this stays inside the root.
	return os.RemoveAll(filepath.Join(x.root, filepath.FromSlash(rel)))
}

func (x *extractor) mkdir(parent int, rel, base string, hdr *tar.Header) error {
	// 0700 until finish: children must be creatable even when the final mode forbids it.
	err := unix.Mkdirat(parent, base, 0o700)
	created := err == nil
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := x.clear(parent, rel, base); err != nil {
				return err
			}
			err = unix.Mkdirat(parent, base, 0o700)
			created = err == nil
		} else {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	if created {
		x.inodes++
	}
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat directory: %w", err)
	}
	if x.privileged {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := x.setXattrs(hdr, func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) }); err != nil {
		return err
	}
	x.dirs[keyOf(&st)] = dirMeta{mode: mode(hdr), atime: hdr.AccessTime, mtime: hdr.ModTime}
	return nil
}

func (x *extractor) file(parent int, rel, base string, hdr *tar.Header, r io.Reader) error {
	// The stream is bounded as it is read; this bounds what a sparse file expands to as well.
	if x.fileBytes += hdr.Size; x.fileBytes > x.limits.MaxBytes {
		return fmt.Errorf("%w max_uncompressed_bytes = %d: the files declared so far hold %d bytes", ErrLimit, x.limits.MaxBytes, x.fileBytes)
	}
	if err := x.clear(parent, rel, base); err != nil {
		return err
	}
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	x.inodes++
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	// Order matters: chown clears setuid bits and security.capability, so mode and xattrs follow it.
	if x.privileged {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, mode(hdr)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := x.setXattrs(hdr, func(n string, v []byte) error { return unix.Fsetxattr(fd, n, v, 0) }); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil {
		x.size += st.Blocks * 512
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return setTimes(parent, base, hdr.AccessTime, hdr.ModTime)
}

func (x *extractor) symlink(parent int, rel, base string, hdr *tar.Header) error {
	if err := x.clear(parent, rel, base); err != nil {
		return err
	}
	// The target is stored verbatim and never resolved here.
	if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	x.inodes++
	return x.finishNode(parent, base, hdr, false)
}

func (x *extractor) hardlink(parent int, rel, base string, hdr *tar.Header) error {
	target, err := cleanPath(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("%w: hard link target %q climbs out of the layer directory", ErrRejected, hdr.Linkname)
	}
	if target == "" || target == rel {
		return fmt.Errorf("%w: hard link to %q", ErrRejected, hdr.Linkname)
	}
	if err := x.limits.checkPath(target); err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	tdir, tbase := split(target)
	tparent, err := x.openDir(tdir, false)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: hard link target %q is not in this layer", ErrRejected, hdr.Linkname)
	}
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	defer unix.Close(tparent)
	var st unix.Stat_t
	if err := unix.Fstatat(tparent, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%w: hard link target %q is not in this layer", ErrRejected, hdr.Linkname)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: hard link to directory %q", ErrRejected, hdr.Linkname)
	}
	if err := x.clear(parent, rel, base); err != nil {
		return err
	}
	// Flags 0: a symlink target is linked itself, never followed.
	if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
		return fmt.Errorf("link to %q: %w", hdr.Linkname, err)
	}
	return nil
}

func (x *extractor) node(parent int, rel, base string, hdr *tar.Header) error {
	var kind uint32
	switch hdr.Typeflag {
	case tar.TypeChar:
		kind = unix.S_IFCHR
	case tar.TypeBlock:
		kind = unix.S_IFBLK
	default:
		kind = unix.S_IFIFO
	}
	if kind != unix.S_IFIFO && !x.privileged {
		return fmt.Errorf("%w: device node %d:%d needs root", ErrRejected, hdr.Devmajor, hdr.Devminor)
	}
	if err := x.clear(parent, rel, base); err != nil {
		return err
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(parent, base, kind|mode(hdr), int(dev)); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	x.inodes++
	return x.finishNode(parent, base, hdr, true)
}

// finishNode applies ownership, mode (when chmod), xattrs and times to a symlink or node that
// cannot be opened as a file.
func (x *extractor) finishNode(parent int, base string, hdr *tar.Header, chmod bool) error {
	if x.privileged {
		if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if chmod {
		// base is the node just created, never a symlink: the umask must not decide its mode.
		if err := unix.Fchmodat(parent, base, mode(hdr), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	// lsetxattr through the parent's descriptor: the last component is not followed.
	p := fmt.Sprintf("/proc/self/fd/%d/%s", parent, base)
	if err := x.setXattrs(hdr, func(n string, v []byte) error { return unix.Lsetxattr(p, n, v, 0) }); err != nil {
		return err
	}
	return setTimes(parent, base, hdr.AccessTime, hdr.ModTime)
}

func (x *extractor) whiteout(hdr *tar.Header, dir, base string) error {
	if base != whiteoutOpaque && strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	parent, err := x.openDir(dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if base == whiteoutOpaque {
		fd, err := unix.Openat(parent, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open opaque directory: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.Fsetxattr(fd, x.opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("mark directory opaque (%s): %w", x.opaqueXattr, err)
		}
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%w: malformed whiteout %q", ErrRejected, base)
	}
	if err := x.clear(parent, path.Join(dir, name), name); err != nil {
		return err
	}
	// A 0/0 character device is overlayfs's whiteout; the kernel lets anyone create one.
	if err := unix.Mknodat(parent, name, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %q: %w", name, err)
	}
	x.inodes++
	if x.privileged {
		if err := unix.Fchownat(parent, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown whiteout: %w", err)
		}
	}
	return setTimes(parent, name, hdr.AccessTime, hdr.ModTime)
}

// setXattrs applies the entry's PAX SCHILY.xattr.* records. Overlayfs's own trusted/user.overlay.*
// attributes are dropped: only whiteout conversion may write them, or a layer could forge redirects
// into other layers. Without root, only user.* attributes can be set; the others are left out, like
// ownership.
func (x *extractor) setXattrs(hdr *tar.Header, set func(name string, value []byte) error) error {
	const prefix = "SCHILY.xattr."
	var names []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, prefix) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		n := strings.TrimPrefix(k, prefix)
		if strings.HasPrefix(n, "trusted.overlay.") || strings.HasPrefix(n, "user.overlay.") {
			continue
		}
		if !x.privileged && !strings.HasPrefix(n, "user.") {
			continue
		}
		if err := set(n, []byte(hdr.PAXRecords[k])); err != nil {
			return fmt.Errorf("set xattr %s: %w", n, err)
		}
	}
	return nil
}

// finish applies directory modes and times, which creating children would otherwise disturb. It
// walks the tree depth first and sets a directory after its subdirectories, so a mode that forbids
// writing or searching never gets in the way; the walk holds one descriptor per level, and the
// depth is bounded by MaxPathDepth.
func (x *extractor) finish() error {
	fd, err := unix.Openat(x.rootfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open layer root: %w", err)
	}
	return x.finishDir(fd, "")
}

// finishDir applies the metadata of the directories below dirfd (the directory rel), then closes
// dirfd.
func (x *extractor) finishDir(dirfd int, rel string) error {
	f := os.NewFile(uintptr(dirfd), rel)
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("directory %q: %w", rel, err)
		}
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("directory %q: %w", path.Join(rel, name), err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			child := path.Join(rel, name)
			x.size += st.Blocks * 512
			cfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("directory %q: %w", child, err)
			}
			if err := x.finishDir(cfd, child); err != nil {
				return err
			}
			m, ok := x.dirs[keyOf(&st)]
			if !ok {
				continue // created as a parent: keeps 0755
			}
			err = unix.Fchmodat(dirfd, name, m.mode, 0)
			if err == nil {
				err = setTimes(dirfd, name, m.atime, m.mtime)
			}
			if err != nil {
				return fmt.Errorf("directory %q: %w", child, err)
			}
		}
	}
}

// mode returns the permission bits of an entry, setuid, setgid and sticky included.
func mode(hdr *tar.Header) uint32 { return uint32(hdr.Mode) & 0o7777 }

func setTimes(parent int, base string, atime, mtime time.Time) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{
		{Sec: atime.Unix(), Nsec: int64(atime.Nanosecond())},
		{Sec: mtime.Unix(), Nsec: int64(mtime.Nanosecond())},
	}
	if err := unix.UtimesNanoAt(parent, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}
