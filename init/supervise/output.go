package supervise

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// DefaultOutputSize is how many bytes of each service's output Output keeps unless
// WithOutputSize says otherwise: enough for the last few screens of a crash, small enough to keep
// for every service on a node.
const DefaultOutputSize = 64 << 10

// maxLine bounds the console line buffer so a service that never writes a newline cannot make
// the supervisor hold its whole output; longer lines reach the console in pieces.
const maxLine = 4 << 10

// ring keeps the last len(buf) bytes written to it.
type ring struct {
	mu   sync.Mutex
	buf  []byte
	pos  int  // next write position
	full bool // buf has wrapped at least once
}

func newRing(size int) *ring { return &ring{buf: make([]byte, size)} }

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	if n >= len(r.buf) {
		copy(r.buf, p[n-len(r.buf):])
		r.pos, r.full = 0, true
		return n, nil
	}
	c := copy(r.buf[r.pos:], p)
	if c < n {
		copy(r.buf, p[c:])
		r.full = true
	}
	r.pos = (r.pos + n) % len(r.buf)
	if r.pos == 0 && n > 0 {
		r.full = true
	}
	return n, nil
}

// Bytes returns a copy of the kept tail, oldest byte first.
func (r *ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return bytes.Clone(r.buf[:r.pos])
	}
	out := make([]byte, 0, len(r.buf))
	out = append(out, r.buf[r.pos:]...)
	return append(out, r.buf[:r.pos]...)
}

// copyOutput reads a service's stdout/stderr pipe until every writer has closed it (which may be
// after the service itself exited, if it left children behind), keeping the tail in the ring,
// appending each line to the service's log file, and echoing it to the console when asked to.
func (s *Service) copyOutput(r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			s.out.Write(line)
			if s.extra != nil {
				s.extra.write(line)
			}
			if s.file != nil {
				s.file.write(line)
			}
			if s.spec.Echo {
				s.sup.consoleLine(s.spec.Name, line)
			}
		}
		if err != nil && err != bufio.ErrBufferFull {
			return // io.EOF once the pipe closes; the partial last line was written above
		}
	}
}

// consoleLine writes "<name>: <line>\n" to the console in one Write so lines of concurrent
// services never interleave.
func (s *Supervisor) consoleLine(name string, line []byte) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	msg := make([]byte, 0, len(name)+len(line)+3)
	msg = append(msg, name...)
	msg = append(msg, ": "...)
	msg = append(msg, line...)
	msg = append(msg, '\n')

	s.consoleMu.Lock()
	defer s.consoleMu.Unlock()
	if _, err := s.console.Write(msg); err != nil && !s.consoleFailed {
		// Logged once: a broken console would otherwise add a log line per output line, and the
		// output is still kept in each service's ring.
		s.consoleFailed = true
		s.log.Warn("write service output to console", "service", name, "err", err)
	}
}
