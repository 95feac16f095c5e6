// Command ingot-node is the node's one static binary. As PID 1 it is the init (init/pid1); later
// issues add the CRI runtime, the shim and the pause process as subcommands chosen by argv.
package main

import (
	"fmt"
	"os"

	"ingot.dev/ingot/init/pid1"
)

func main() {
	if os.Getpid() == 1 {
		pid1.Main("libseccomp " + seccompVersion())
		return // not reached: pid1.Main never returns
	}
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Printf("ingot-node (libseccomp %s)\n", seccompVersion())
		return
	}
	fmt.Fprintln(os.Stderr, "usage: ingot-node version (as PID 1 it runs the node's init)")
	os.Exit(2)
}
