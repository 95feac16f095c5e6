package shim

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Descriptors cross between the daemon and the shim as SCM_RIGHTS messages on unix sockets: the
// daemon hands a stream's pipe ends to the shim, and libcontainer's console socket hands a
// terminal's master to the shim. Every descriptor received is made close-on-exec at once, so
// none leaks into a container's process through libcontainer's exec of runc init.

// sendFiles writes b with files attached to conn.
func sendFiles(conn *net.UnixConn, b []byte, files ...*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := conn.WriteMsgUnix(b, oob, nil)
	if err == nil && (n != len(b) || oobn != len(oob)) {
		err = fmt.Errorf("short write (%d of %d bytes, %d of %d control bytes)", n, len(b), oobn, len(oob))
	}
	return err
}

// maxPassed is the most descriptors one message carries (stdin, stdout, stderr).
const maxPassed = 3

// recvFiles reads into b from conn and returns the files that came with the read.
func recvFiles(conn *net.UnixConn, b []byte) (int, []*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(maxPassed*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(b, oob)
	if err != nil {
		return n, nil, err
	}
	files, perr := parseRights(oob[:oobn], "stream")
	return n, files, perr
}

// recvFile waits for one descriptor on f (libcontainer's console socket: the terminal master).
func recvFile(f *os.File, name string) (*os.File, error) {
	b := make([]byte, 4096) // libcontainer sends the file's name as the data
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		_, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), b, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive %s: %w", name, err)
		}
		files, err := parseRights(oob[:oobn], name)
		if err != nil {
			return nil, err
		}
		if len(files) != 1 {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("receive %s: got %d descriptors, want 1", name, len(files))
		}
		return files[0], nil
	}
}

func parseRights(oob []byte, name string) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("receive %s: %w", name, err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), name))
		}
	}
	return files, nil
}
