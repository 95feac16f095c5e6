package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"ingot.dev/ingot/image/configdrive"
	"ingot.dev/ingot/profiles/nodeconfig"
)

const nodeConfigUsage = `usage: ingot node-config validate FILE
       ingot node-config drive FILE --out config.img [--format vfat|iso]

validate checks a node.toml and prints "FILE: ok" or the first problem as FILE:LINE: KEY: message.
drive checks it, then writes a config-drive image: a vfat (FAT12) or ISO 9660 volume labelled
INGOT-CONFIG holding node.toml, for a node to read at boot. Time stamps on the volume come from
SOURCE_DATE_EPOCH (default 0, so the same file gives the same image). See docs/node-config.md.
`

func cmdNodeConfig(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, nodeConfigUsage)
		return errors.New("node-config: want validate FILE or drive FILE --out IMAGE")
	}
	switch args[0] {
	case "validate":
		if len(args) != 2 {
			return errors.New("node-config validate: want one file")
		}
		if _, err := readNodeConfig(args[1]); err != nil {
			return err
		}
		fmt.Printf("%s: ok\n", args[1])
		return nil
	case "drive":
		return cmdNodeConfigDrive(args[1:])
	case "-h", "--help", "help":
		fmt.Print(nodeConfigUsage)
		return nil
	}
	return fmt.Errorf("node-config: unknown subcommand %q (want validate or drive)", args[0])
}

func cmdNodeConfigDrive(args []string) error {
	fs := flag.NewFlagSet("ingot node-config drive", flag.ContinueOnError)
	out := fs.String("out", "", "image to write (required)")
	format := fs.String("format", string(configdrive.VFAT), "filesystem: vfat or iso")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), nodeConfigUsage+"\n")
		fs.PrintDefaults()
	}
	// The file comes first (ingot node-config drive FILE --out X); flag stops at it, so parse
	// what follows it too.
	var file string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("node-config drive: unexpected argument %q", fs.Arg(0))
	}
	if file == "" || *out == "" {
		return errors.New("node-config drive: want FILE and --out IMAGE")
	}
	f := configdrive.Format(*format)
	if f != configdrive.VFAT && f != configdrive.ISO {
		return fmt.Errorf("node-config drive: unknown --format %q (want vfat or iso)", *format)
	}
	raw, err := readNodeConfig(file)
	if err != nil {
		return err
	}
	if err := configdrive.Write(*out, f, raw, sourceDateEpoch()); err != nil {
		return err
	}
	fmt.Printf("%s: %s config drive %q holding %s (%d bytes)\n", *out, f, configdrive.Label, file, len(raw))
	return nil
}

// readNodeConfig reads and validates a node.toml; the error is one line naming file, line and key.
func readNodeConfig(file string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if _, err := nodeconfig.Parse(file, raw); err != nil {
		return nil, err
	}
	return raw, nil
}
