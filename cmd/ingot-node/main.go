// Command ingot-node is the node's one static binary. It dispatches on how it is started: the first
// argument picks the role: `runtime` (the CRI daemon), `shim` (one per pod), and `init`,
// libcontainer's re-execution of this binary as a container's first process. Run as modprobe (a
// symlink of that name), it loads kernel modules for the kernel's autoloader. Started as PID 1 with
// none of these, it is the node's init (init/pid1): the kernel runs it with no role argument.
// A pod's pause process is not this binary: it is runtime/pause's few hundred bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"ingot.dev/ingot/init/kmod"
	"ingot.dev/ingot/init/pid1"
	"ingot.dev/ingot/init/supervise"
	"ingot.dev/ingot/netsetup/link"
	"ingot.dev/ingot/runtime/daemon"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/shim"
)

func main() {
	// First: when libcontainer re-executes us as a container's init, nothing else may run.
	oci.MaybeInit()
	// The kernel's module autoloader runs /sbin/modprobe, a symlink to this binary.
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(kmod.Modprobe(os.Args[1:], os.Stderr))
	}
	role := ""
	if len(os.Args) > 1 {
		role = os.Args[1]
	}
	switch role {
	case "runtime":
		os.Exit(daemon.Main(os.Args[2:]))
	case "shim":
		fs := flag.NewFlagSet("shim", flag.ExitOnError)
		dir := fs.String("dir", "", "the pod's shim directory")
		socket := fs.String("socket", "", "the shim's unix socket")
		listenFD := fs.Int("listen-fd", 0, "descriptor of the shim's socket, already listening (0: listen on --socket)")
		maxLine := fs.Int("max-log-line", 16384, "max_container_log_line_size")
		fs.Parse(os.Args[2:])
		if err := shim.Main(*dir, *socket, *listenFD, *maxLine); err != nil {
			fmt.Fprintln(os.Stderr, "ingot-node shim:", err)
			os.Exit(1)
		}
	case "net":
		// `ingot-node net show`: the node's links, addresses and routes as applied.
		out, err := link.Show()
		if err != nil {
			fmt.Fprintln(os.Stderr, "ingot-node net:", err)
			os.Exit(1)
		}
		fmt.Print(out)
	case "logs":
		// `ingot-node logs SERVICE`: what a service PID 1 supervises has written, kept in
		// /run/ingot/services whether or not the profile echoes it to the console.
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: ingot-node logs SERVICE (the services: ls "+pid1.ServiceLogDir+")")
			os.Exit(2)
		}
		out, err := supervise.ReadLog(pid1.ServiceLogDir, os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "ingot-node logs:", err)
			os.Exit(1)
		}
		os.Stdout.Write(out)
	case "hw":
		// `ingot-node hw show`: every device with a modalias, the driver bound to it, and the
		// image's modules that match it; a device with neither has no driver in this image.
		if len(os.Args) != 3 || os.Args[2] != "show" {
			fmt.Fprintln(os.Stderr, "usage: ingot-node hw show")
			os.Exit(2)
		}
		if err := hwShow(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "ingot-node hw:", err)
			os.Exit(1)
		}
	case "version":
		fmt.Printf("ingot-node (libseccomp %s)\n", seccompVersion())
	default:
		// The kernel passes init the command line words it does not know, so any other argument
		// (or none) as PID 1 is the node's init.
		if os.Getpid() == 1 {
			pid1.Main("libseccomp " + seccompVersion())
			return // not reached: pid1.Main never returns
		}
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ingot-node runtime|shim|net show|logs SERVICE|version (as PID 1 it runs the node's init)")
	os.Exit(2)
}
