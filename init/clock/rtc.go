package clock

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// RTCDevice is the hardware clock the kernel read the time from at boot.
const RTCDevice = "/dev/rtc0"

// WriteRTC sets the hardware clock at dev to t, in UTC as Linux keeps it, so the next boot
// starts from the time this one ended with rather than the time it started with. A machine
// without one (dev missing) is not an error: there is nothing to write, and set is false.
func WriteRTC(dev string, t time.Time) (set bool, err error) {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("write the hardware clock %s: %w", dev, err)
	}
	defer f.Close()
	rt := rtcTime(t)
	if err := unix.IoctlSetRTCTime(int(f.Fd()), &rt); err != nil {
		return false, fmt.Errorf("write the hardware clock %s: %w", dev, err)
	}
	return true, nil
}

// rtcTime is t as struct rtc_time: UTC, years since 1900, months from 0.
func rtcTime(t time.Time) unix.RTCTime {
	t = t.UTC()
	return unix.RTCTime{
		Sec: int32(t.Second()), Min: int32(t.Minute()), Hour: int32(t.Hour()),
		Mday: int32(t.Day()), Mon: int32(t.Month()) - 1, Year: int32(t.Year()) - 1900,
		Wday: int32(t.Weekday()), Yday: int32(t.YearDay()) - 1,
	}
}
