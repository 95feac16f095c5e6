package power

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

func event(typ, code uint16, value int32) []byte {
	b := make([]byte, eventSize)
	binary.LittleEndian.PutUint16(b[16:], typ)
	binary.LittleEndian.PutUint16(b[18:], code)
	binary.LittleEndian.PutUint32(b[20:], uint32(value))
	return b
}

// Events a keyboard or the ACPI button sends that are not a press of the power button: none of
// them may power the node off.
var notPresses = map[string][]byte{
	"KEY_A press":          event(evKey, 30, 1),
	"KEY_POWER release":    event(evKey, keyPower, 0),
	"KEY_POWER autorepeat": event(evKey, keyPower, 2),
	"SYN":                  event(0, 0, 0),
	"EV_REL with code 116": event(0x02, keyPower, 1),
	"short read":           event(evKey, keyPower, 1)[:eventSize-1],
}

func TestIsPowerPress(t *testing.T) {
	if !IsPowerPress(event(evKey, keyPower, 1)) {
		t.Fatal("a KEY_POWER press is not taken for one")
	}
	for name, ev := range notPresses {
		if IsPowerPress(ev) {
			t.Errorf("%s taken for a power press", name)
		}
	}
}

func TestReadSignalsOnlyPowerPress(t *testing.T) {
	var others bytes.Buffer
	for name, ev := range notPresses {
		if len(ev) == eventSize && name != "short read" {
			others.Write(ev)
		}
	}
	pressed := make(chan struct{}, 1)
	read(bytes.NewReader(others.Bytes()), pressed)
	select {
	case <-pressed:
		t.Fatal("a stream without a power press powered the node off")
	default:
	}

	others.Write(event(evKey, keyPower, 1))
	read(&others, pressed)
	select {
	case <-pressed:
	case <-time.After(time.Second):
		t.Fatal("power press not reported")
	}
}
