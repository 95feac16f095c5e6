// Package power watches input devices for the power button (QEMU's system_powerdown arrives as
// an ACPI button press, reported through evdev as KEY_POWER).
package power

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

const (
	evKey    = 0x01
	keyPower = 116
	// struct input_event on 64-bit kernels: struct timeval (16) + type (2) + code (2) + value (4).
	eventSize = 24
)

// Watch opens every /dev/input/event* device and sends on pressed once per KEY_POWER press. It
// returns how many devices it watches; the readers stop when ctx ends.
func Watch(ctx context.Context, log *slog.Logger, pressed chan<- struct{}) (int, error) {
	devs, _ := filepath.Glob("/dev/input/event*")
	n := 0
	for _, d := range devs {
		f, err := os.Open(d)
		if err != nil {
			log.Warn("open input device", "device", d, "err", err)
			continue
		}
		n++
		go func() {
			<-ctx.Done()
			f.Close()
		}()
		go read(f, pressed)
	}
	if n == 0 && len(devs) > 0 {
		return 0, fmt.Errorf("watch power button: none of %d input devices could be opened", len(devs))
	}
	return n, nil
}

func read(r io.Reader, pressed chan<- struct{}) {
	buf := make([]byte, eventSize)
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		if IsPowerPress(buf) {
			select {
			case pressed <- struct{}{}:
			default:
			}
		}
	}
}

// IsPowerPress reports whether one input_event is a press of KEY_POWER.
func IsPowerPress(ev []byte) bool {
	if len(ev) < eventSize {
		return false
	}
	typ := binary.LittleEndian.Uint16(ev[16:])
	code := binary.LittleEndian.Uint16(ev[18:])
	value := int32(binary.LittleEndian.Uint32(ev[20:]))
	return typ == evKey && code == keyPower && value == 1
}
