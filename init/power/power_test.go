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

func TestReadSignalsOnlyPowerPress(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(event(evKey, 30, 1))       // KEY_A
	stream.Write(event(evKey, keyPower, 0)) // release
	stream.Write(event(0, 0, 0))            // SYN
	stream.Write(event(evKey, keyPower, 1)) // press
	pressed := make(chan struct{}, 1)
	read(&stream, pressed)
	select {
	case <-pressed:
	case <-time.After(time.Second):
		t.Fatal("power press not reported")
	}
	if IsPowerPress(event(evKey, keyPower, 2)) {
		t.Fatal("autorepeat taken for a press")
	}
}
