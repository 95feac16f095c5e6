package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/term"

	"ingot.dev/ingot/image/build"
)

// newProgress shows build steps on one redrawn line on a terminal and as plain lines otherwise
// (CI logs, pipes).
func newProgress(w *os.File) build.Progress {
	if term.IsTerminal(int(w.Fd())) {
		return &ttyProgress{w: w}
	}
	return plainProgress{w: w}
}

type plainProgress struct{ w io.Writer }

func (p plainProgress) Step(i, n int, what string) {
	fmt.Fprintf(p.w, "ingot build: [%d/%d] %s\n", i, n, what)
}
func (p plainProgress) Done() {}

type ttyProgress struct {
	w     io.Writer
	drawn bool
}

func (p *ttyProgress) Step(i, n int, what string) {
	fmt.Fprintf(p.w, "\r\033[K[%d/%d] %s…", i, n, what)
	p.drawn = true
}

func (p *ttyProgress) Done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// sourceDateEpoch is SOURCE_DATE_EPOCH, or 0: image files carry no build time by default.
func sourceDateEpoch() int64 {
	v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
