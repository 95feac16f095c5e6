// Package pause is the process that holds a pod's namespaces. It runs as the pod's pause
// container init: it does nothing, reaps any child it inherits (when the pod shares its pid
// namespace it is that namespace's init), and exits on SIGTERM or SIGINT.
package pause

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Run blocks until the pause process is told to stop, and returns the exit code.
func Run() int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		return 0
	}
	return 0
}
