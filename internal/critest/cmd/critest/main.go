// Command critest runs cri-tools' critest against ingot's runtime on this host (root) and prints
// `critest: N passed, N failed, N skipped`; see package internal/critest. `make critest` runs it.
//
//	go run ./internal/critest/cmd/critest -node bin/ingot-node-amd64 [-v] [-- critest flags]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/critest"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == critest.InnerArg {
		os.Exit(critest.Inner(os.Args[2]))
	}
	node := flag.String("node", filepath.Join("bin", "ingot-node-"+runtime.GOARCH), "the ingot-node binary")
	cache := flag.String("cache", cachedir.Default(), "ingot's cache (critest and the test images are built into it)")
	logs := flag.String("logs", "", "directory for critest.log, report.json and daemon.log (default: a new temporary one)")
	verbose := flag.Bool("v", false, "ginkgo -v: print every spec's steps")
	strict := flag.Bool("strict", false, "exit 1 when a spec fails (default: only when the run itself breaks)")
	timeout := flag.Duration("timeout", time.Hour, "give up on the whole run after this long")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] [-- critest flags, e.g. -ginkgo.focus=Image]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	abs, err := filepath.Abs(*node)
	if err == nil {
		*node = abs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := critest.Run(ctx, critest.Options{
		Node: *node, Cache: *cache, Logs: *logs, Verbose: *verbose, Args: flag.Args(), Timeout: *timeout,
		Out: os.Stdout, Log: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "critest: "+format+"\n", args...) },
	})
	for _, f := range sum.Failures {
		fmt.Printf("FAILED %s\n    %s\n    at %s\n", f.Spec, firstLine(f.Message), f.Where)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "critest:", err)
	}
	fmt.Println(sum)
	if err != nil || (*strict && sum.Failed > 0) {
		os.Exit(1)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
