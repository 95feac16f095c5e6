// Command nokubelet stands in for the kubelet in an image whose kubelet never reports: it
// starts, as PID 1's supervisor expects, and then does nothing, so the node never registers
// from that boot and the image swap's health gate must refuse it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
