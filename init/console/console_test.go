package console

import (
	"bytes"
	"log/slog"
	"testing"
	"time"
)

func TestHandlerFormat(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, slog.LevelInfo)
	h.now = func() time.Duration { return 1234 * time.Millisecond }
	log := slog.New(h).With("phase", "mounts")
	log.Info("phase done", "took", "5ms", "note", "two words")
	log.Debug("hidden")
	log.Warn("no state disk")
	want := "[    1.234] ingot: phase done phase=mounts took=5ms note=\"two words\"\n" +
		"[    1.234] ingot: WARN: no state disk phase=mounts\n"
	if buf.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", buf.String(), want)
	}
}
