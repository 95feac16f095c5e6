package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"ingot.dev/ingot/runtime/config"
)

// cmdConfig implements `ingot config validate FILE`: it checks a containerd
// config.toml the way the node's runtime will read it.
func cmdConfig(args []string) error {
	return runConfig(os.Stdout, os.Stderr, args)
}

func runConfig(stdout, stderr io.Writer, args []string) error {
	if len(args) == 0 {
		return errors.New("config: want validate FILE")
	}
	switch args[0] {
	case "validate":
		if len(args) != 2 {
			return errors.New("config validate: want one file")
		}
		_, warnings, err := config.Load(args[1])
		for _, w := range warnings {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[1])
		return nil
	}
	return fmt.Errorf("config: unknown subcommand %q (want validate)", args[0])
}
