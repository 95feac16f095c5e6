package supervise

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// MaxLogSize is the size at which a service's log file is rotated: the node keeps at most twice
// this per service, on the tmpfs /run, whatever the service writes.
const MaxLogSize = 1 << 20

// logFile is one service's output on disk: <dir>/<name>.log, and the previous MaxLogSize bytes in
// <name>.log.1. Writes are whole lines (or maxLine pieces) from copyOutput. A failure to write is
// logged once and the file is given up: the output is still in the ring.
type logFile struct {
	log  *slog.Logger
	path string

	mu     sync.Mutex
	f      *os.File
	size   int64
	failed bool
}

// newLogFile returns the log file of service name, or nil when the supervisor keeps none.
func (s *Supervisor) newLogFile(name string) *logFile {
	if s.logDir == "" {
		return nil
	}
	return &logFile{log: s.log.With("service", name), path: filepath.Join(s.logDir, name+".log")}
}

// extraLogFile is the Spec.LogFile of a service, or nil.
func (s *Supervisor) extraLogFile(spec Spec) *logFile {
	if spec.LogFile == "" {
		return nil
	}
	return &logFile{log: s.log.With("service", spec.Name), path: spec.LogFile}
}

func (l *logFile) write(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed {
		return
	}
	if err := l.writeLocked(line); err != nil {
		l.failed = true
		if l.f != nil {
			l.f.Close()
			l.f = nil
		}
		l.log.Warn("write service log file; its output is kept in memory only", "path", l.path, "err", err)
	}
}

func (l *logFile) writeLocked(line []byte) error {
	if l.f != nil && l.size+int64(len(line)) > MaxLogSize {
		l.f.Close()
		l.f = nil
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	if l.f == nil {
		if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		l.f, l.size = f, st.Size()
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	return err
}

// ReadLog returns what the log directory dir holds of service name's output, oldest first: the
// rotated file, then the current one. A service that has written nothing yet, like an unknown
// name, is an error wrapping fs.ErrNotExist.
func ReadLog(dir, name string) ([]byte, error) {
	if name == "" || name != filepath.Base(name) || name[0] == '.' {
		return nil, fmt.Errorf("service log %q: %w", name, ErrInvalid)
	}
	path := filepath.Join(dir, name+".log")
	old, err := os.ReadFile(path + ".1")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("service log %s: %w", name, err)
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && old != nil {
			return old, nil
		}
		return nil, fmt.Errorf("service log %s: %w", name, err)
	}
	return append(old, cur...), nil
}
