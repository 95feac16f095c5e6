package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ingot.dev/ingot/pki"
)

const pkiUsage = `usage: ingot pki init [--dir DIR]
       ingot pki node NAME --ip ADDR [--ip ADDR…] [--dns NAME…] [--dir DIR]
       ingot pki client NAME [--role admin|reader] [--dir DIR]
       ingot pki node-toml NAME [--port N] [--dir DIR]

The node API's certificates, in a directory the operator keeps (default ./pki):
  init       make the CA (refuses a directory that has one)
  node       issue node NAME's server certificate for the addresses ingot ctl reaches it at
  client     issue a client certificate; its role (O field) is admin (everything) or reader (looks only)
  node-toml  print node NAME's [api] table for its node.toml (it holds the node's private key)
See docs/node-api.md.
`

func cmdPKI(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Print(pkiUsage)
		if len(args) == 0 {
			return errors.New("pki: want init, node, client or node-toml")
		}
		return nil
	}
	sub := args[0]
	fs := flag.NewFlagSet("ingot pki "+sub, flag.ContinueOnError)
	dir := fs.String("dir", "pki", "the PKI directory")
	var ips, dns multiFlag
	role := pki.RoleAdmin
	port := 0
	switch sub {
	case "init":
	case "node":
		fs.Var(&ips, "ip", "an IP address the node is reached at (repeatable)")
		fs.Var(&dns, "dns", "a DNS name the node is reached at (repeatable)")
	case "client":
		fs.StringVar(&role, "role", pki.RoleAdmin, "admin or reader")
	case "node-toml":
		fs.IntVar(&port, "port", 0, "the API's port, when not 50000")
	default:
		return fmt.Errorf("pki: unknown subcommand %q (want init, node, client or node-toml)", sub)
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), pkiUsage+"\n")
		fs.PrintDefaults()
	}
	rest := args[1:]
	var name string
	if sub != "init" {
		// NAME comes first (ingot pki node n1 --ip …): flag stops at it, so parse what follows.
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			name, rest = rest[0], rest[1:]
		}
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 && sub != "init" {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("pki %s: unexpected argument %q", sub, fs.Arg(0))
	}
	if sub != "init" && name == "" {
		return fmt.Errorf("pki %s: want a NAME", sub)
	}
	now := time.Now()
	switch sub {
	case "init":
		if err := pki.Init(*dir, now); err != nil {
			return err
		}
		fmt.Printf("%s: CA made (%s); keep %s private\n", *dir, pki.FileCA, pki.FileCAKey)
	case "node":
		var addrs []net.IP
		for _, s := range ips {
			ip := net.ParseIP(s)
			if ip == nil {
				return fmt.Errorf("pki node %s: --ip %q is not an IP address", name, s)
			}
			addrs = append(addrs, ip)
		}
		if err := pki.Node(*dir, name, addrs, dns, now); err != nil {
			return err
		}
		fmt.Printf("%s: node %s's certificate for %s; ingot pki node-toml %s --dir %s prints its [api] table\n",
			filepath.Join(*dir, pki.DirNodes, name+".crt"), name, strings.Join(append(ips, dns...), ", "), name, *dir)
	case "client":
		if err := pki.Client(*dir, name, role, now); err != nil {
			return err
		}
		fmt.Printf("%s: client %s, role %s\n", filepath.Join(*dir, pki.DirClients, name+".crt"), name, role)
	case "node-toml":
		b, err := pki.APITable(*dir, name, port)
		if err != nil {
			return err
		}
		os.Stdout.Write(b)
	}
	return nil
}
