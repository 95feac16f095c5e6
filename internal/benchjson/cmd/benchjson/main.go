// Command benchjson turns `go test -bench` output into a JSON run and compares two runs:
//
//	benchjson -o out/bench/RUN.json [-commit C] RAW...   (RAW: files of go test -bench output)
//	benchjson compare [-threshold 0.1] OLD.json NEW.json
//
// compare exits 1 when a metric got worse by more than the threshold, so a script notices.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"ingot.dev/ingot/internal/benchjson"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "compare" {
		fs := flag.NewFlagSet("compare", flag.ExitOnError)
		threshold := fs.Float64("threshold", 0.1, "how much worse (0.1: 10%) marks a metric")
		fs.Parse(os.Args[2:])
		if fs.NArg() != 2 {
			fmt.Fprintln(os.Stderr, "usage: benchjson compare [-threshold F] OLD.json NEW.json")
			os.Exit(2)
		}
		old, err := benchjson.Read(fs.Arg(0))
		check(err)
		new, err := benchjson.Read(fs.Arg(1))
		check(err)
		fmt.Printf("old: %s (%s)\nnew: %s (%s)\n\n", fs.Arg(0), old.Commit, fs.Arg(1), new.Commit)
		if n := benchjson.Compare(os.Stdout, old, new, *threshold); n > 0 {
			fmt.Printf("\n%d metrics worse by more than %.0f%%\n", n, *threshold*100)
			os.Exit(1)
		}
		return
	}
	out := flag.String("o", "", "the JSON file to write")
	commit := flag.String("commit", "", "the commit the run measured")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: benchjson -o RUN.json [-commit C] RAW...")
		os.Exit(2)
	}
	run := &benchjson.Run{Date: time.Now().UTC().Format(time.RFC3339), Commit: *commit}
	for _, path := range flag.Args() {
		f, err := os.Open(path)
		check(err)
		err = run.Parse(f)
		f.Close()
		if err != nil {
			check(fmt.Errorf("%s: %w", path, err))
		}
	}
	if len(run.Results) == 0 {
		check(fmt.Errorf("no benchmark results in %v", flag.Args()))
	}
	check(run.Write(*out))
	fmt.Printf("%d results written to %s\n", len(run.Results), *out)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchjson:", err)
		os.Exit(1)
	}
}
