package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/pki"
	"ingot.dev/ingot/runtime/logs"
)

const ctlUsage = `usage: ingot ctl --node ADDR[:PORT] [--pki DIR] [--client NAME] [-o table|json] COMMAND [ARGS]

Calls a node's API (port 50000 unless ADDR says otherwise) with a client certificate from the PKI
directory (ingot pki). Readers may run every command that only looks; the others need admin.

  version                      the image the node runs
  status                       image, boot slot and counter, uptime, services and their state
  logs SERVICE [-f] [--tail N] a service's output (runtime, kubelet, …)
  dmesg [-f]                   the kernel log
  images                       the runtime's images                      (ctr images ls)
  inspect REF                  one image, with its config                (ctr images inspect)
  pull REF                     pull an image into the node's runtime     (admin; ctr images pull)
  rmi REF                      remove an image                           (admin; ctr images rm)
  containers                   containers and their tasks' state         (ctr containers ls, ctr tasks ls)
  container-logs ID [-f] [--tail N]  a container's output, by ID or a unique prefix
  reboot | poweroff            stop services cleanly, then reboot or power off   (admin)
  upgrade --image DIR [--wait 10m]  write the image to the node's other slot and reboot into it;
                               --wait follows it until committed or rolled back   (admin)
  rollback                     boot the other slot's committed image again       (admin)
See docs/node-api.md.
`

// ctl holds what every ctl command needs.
type ctl struct {
	c    *apiv1.Client
	json bool
	out  io.Writer
}

func cmdCtl(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ingot ctl", flag.ContinueOnError)
	node := fs.String("node", "", "the node's address, host or host:port (required)")
	dir := fs.String("pki", "pki", "the PKI directory holding ca.crt and clients/")
	client := fs.String("client", "", "the client certificate to use (default: the only one in the directory)")
	output := fs.String("o", "table", "output: table or json")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up on a call after this long (a follow runs until interrupted)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), ctlUsage+"\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("ctl: want a command")
	}
	if *node == "" {
		return errors.New("ctl: --node ADDR is required")
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("ctl: -o %q: want table or json", *output)
	}
	addr := *node
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), strconv.Itoa(apiv1.DefaultPort))
	}
	host, _, _ := net.SplitHostPort(addr)
	tc, _, err := pki.ClientTLS(*dir, *client)
	if err != nil {
		return fmt.Errorf("ctl: %w", err)
	}
	tc.ServerName = host
	c, err := apiv1.Dial(addr, tc)
	if err != nil {
		return err
	}
	defer c.Close()
	t := &ctl{c: c, json: *output == "json", out: os.Stdout}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	follows := (cmd == "logs" || cmd == "dmesg" || cmd == "container-logs") && slicesContains(rest, "-f")
	if !follows {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if err := t.run(ctx, cmd, rest); err != nil {
		if s, ok := status.FromError(err); ok {
			return fmt.Errorf("ctl %s: node %s: %s: %s", cmd, addr, s.Code(), s.Message())
		}
		return fmt.Errorf("ctl %s: %w", cmd, err)
	}
	return nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// oneArg parses a command's flags and its one positional argument (before or after the flags).
func oneArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	var arg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arg, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if arg == "" && fs.NArg() == 1 {
		arg = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if what != "" && arg == "" {
		return "", fmt.Errorf("want %s", what)
	}
	return arg, nil
}

func (t *ctl) run(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet("ingot ctl "+cmd, flag.ContinueOnError)
	follow := fs.Bool("f", false, "follow: keep printing what is written")
	tail := fs.Int("tail", 0, "only the last N lines (0: all)")
	switch cmd {
	case "version":
		v, err := t.c.Version(ctx)
		if err != nil {
			return err
		}
		return t.print(v, func(w io.Writer) {
			fmt.Fprintf(w, "version\t%s\nbuild\t%s\nprofile\t%s\narch\t%s\nkernel\t%s\n", v.Version, v.BuildID, v.Profile, v.Arch, v.Kernel)
		})
	case "status":
		s, err := t.c.Status(ctx)
		if err != nil {
			return err
		}
		return t.print(s, func(w io.Writer) {
			fmt.Fprintf(w, "hostname\t%s\nimage\t%s %s (version %s, build %s)\nkernel\t%s\nboot\t%s\nuptime\t%s\n",
				s.Hostname, s.Profile, s.Arch, s.Version, short(s.BuildID), s.Kernel, bootString(s.Boot), s.Uptime.Round(time.Second))
			if u := s.Upgrade; u != nil {
				line := fmt.Sprintf("upgrade\t%s: slot %s → %s", u.Result, u.FromSlot, u.ToSlot)
				if u.Version != "" {
					line += ", version " + u.Version
				}
				line += ", " + u.At.Format(time.RFC3339)
				if u.Reason != "" {
					line += ": " + u.Reason
				}
				fmt.Fprintln(w, line)
			}
			fmt.Fprintln(w)
			fmt.Fprintln(w, "SERVICE\tSTATE\tPID\tRESTARTS\tSINCE\tLAST EXIT")
			for _, sv := range s.Services {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", sv.Name, sv.State, sv.PID, sv.Restarts, sv.Since.UTC().Format(time.RFC3339), sv.LastExit)
			}
		})
	case "logs":
		name, err := oneArg(fs, args, "a SERVICE")
		if err != nil {
			return err
		}
		return t.c.Logs(ctx, &apiv1.LogsRequest{Name: name, Follow: *follow, Tail: *tail}, t.out)
	case "dmesg":
		if _, err := oneArg(fs, args, ""); err != nil {
			return err
		}
		return t.c.Dmesg(ctx, &apiv1.DmesgRequest{Follow: *follow}, t.out)
	case "container-logs":
		id, err := oneArg(fs, args, "a container ID")
		if err != nil {
			return err
		}
		w := io.Writer(t.out)
		var lw *criLogWriter
		if !t.json {
			lw = &criLogWriter{out: t.out}
			w = lw
		}
		err = t.c.ContainerLogs(ctx, &apiv1.LogsRequest{Name: id, Follow: *follow, Tail: *tail}, w)
		if lw != nil {
			lw.flush()
		}
		return err
	case "images":
		r, err := t.c.Images(ctx)
		if err != nil {
			return err
		}
		return t.print(r, func(w io.Writer) {
			fmt.Fprintln(w, "REF\tDIGEST\tIMAGE ID\tSIZE")
			for _, i := range r.Images {
				refs := i.Tags
				if len(refs) == 0 {
					refs = []string{"<none>"}
				}
				for _, ref := range refs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", ref, short(first(i.Digests)), short(i.ID), size(i.Size))
				}
			}
		})
	case "inspect":
		ref, err := oneArg(fs, args, "an image REF")
		if err != nil {
			return err
		}
		r, err := t.c.ImageInspect(ctx, ref)
		if err != nil {
			return err
		}
		// An image's config is a document: JSON is its natural form either way.
		return json.NewEncoder(t.out).Encode(r)
	case "pull":
		ref, err := oneArg(fs, args, "an image REF")
		if err != nil {
			return err
		}
		r, err := t.c.Pull(ctx, ref)
		if err != nil {
			return err
		}
		return t.print(r, func(w io.Writer) { fmt.Fprintf(w, "%s\t%s\n", ref, r.ID) })
	case "rmi":
		ref, err := oneArg(fs, args, "an image REF")
		if err != nil {
			return err
		}
		return t.c.ImageRemove(ctx, ref)
	case "containers", "ps":
		r, err := t.c.Containers(ctx)
		if err != nil {
			return err
		}
		return t.print(r, func(w io.Writer) {
			fmt.Fprintln(w, "CONTAINER\tNAME\tPOD\tNAMESPACE\tIMAGE\tSTATE\tCREATED")
			for _, c := range r.Containers {
				state := c.State
				if c.State == "exited" {
					state += fmt.Sprintf(" (%d)", c.ExitCode)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID[:min(13, len(c.ID))], c.Name, c.Pod, c.Namespace, c.Image, state, c.Created.Format(time.RFC3339))
			}
		})
	case "reboot", "poweroff":
		reason := fs.String("reason", "", "a reason, printed on the node's console")
		if _, err := oneArg(fs, args, ""); err != nil {
			return err
		}
		call := t.c.Reboot
		if cmd == "poweroff" {
			call = t.c.Poweroff
		}
		if err := call(ctx, *reason); err != nil {
			return err
		}
		fmt.Fprintf(t.out, "%s: the node is stopping its services\n", cmd)
		return nil
	case "upgrade":
		dir := fs.String("image", "", "the image directory (ingot build --out) to swap to (required)")
		wait := fs.Duration("wait", 0, "then wait up to this long for the node to boot the new image and commit it (0: do not wait)")
		if _, err := oneArg(fs, args, ""); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("want --image DIR")
		}
		return t.upgrade(ctx, *dir, *wait)
	case "rollback":
		if _, err := oneArg(fs, args, ""); err != nil {
			return err
		}
		r, err := t.c.Rollback(ctx)
		if err != nil {
			return err
		}
		return t.print(r, func(w io.Writer) { fmt.Fprintf(w, "rollback: the node reboots into slot %s\n", r.Slot) })
	}
	return fmt.Errorf("unknown command %q (ingot ctl -h lists them)", cmd)
}

// upgrade sends image dir's UKI to the node and, with wait, follows the node through the reboot
// until the new slot is committed or rolled back.
func (t *ctl) upgrade(ctx context.Context, dir string, wait time.Duration) error {
	m, err := manifest.Read(dir)
	if err != nil {
		return err
	}
	var uki *manifest.Output
	for i := range m.Outputs {
		if m.Outputs[i].Name == manifest.FileUKI {
			uki = &m.Outputs[i]
		}
	}
	if uki == nil {
		return fmt.Errorf("%s: the manifest lists no %s", dir, manifest.FileUKI)
	}
	f, err := os.Open(filepath.Join(dir, manifest.FileUKI))
	if err != nil {
		return err
	}
	defer f.Close()
	before, err := t.c.Status(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	rep, err := t.c.Upgrade(ctx, &apiv1.UpgradeHeader{Version: m.Version, BuildID: m.BuildID, Profile: m.Profile, Arch: m.Arch,
		Size: uki.Size, SHA256: uki.SHA256}, f, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(t.out, "upgrade: %s %s (build %s) written to slot %s in %s; the node reboots into it\n",
		m.Profile, m.Version, short(m.BuildID), rep.Slot, time.Since(start).Round(time.Millisecond))
	if wait == 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := t.c.Status(c)
		cancel()
		if err != nil || st.Uptime >= before.Uptime+time.Since(start) || st.Upgrade == nil {
			continue // not answering, or not rebooted yet
		}
		switch st.Upgrade.Result {
		case "committed":
			if st.Boot.Slot == rep.Slot {
				fmt.Fprintf(t.out, "upgrade: committed: slot %s runs %s %s, %s after the upgrade call\n", st.Boot.Slot, st.Profile, st.Version, time.Since(start).Round(time.Millisecond))
				return nil
			}
		case "rolled back":
			return fmt.Errorf("upgrade rolled back: slot %s runs %s again: %s", st.Boot.Slot, st.Version, st.Upgrade.Reason)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("upgrade: the node did not report the new slot committed within %s", wait)
}

// print writes v as JSON, or as the table table writes.
func (t *ctl) print(v any, table func(io.Writer)) error {
	if t.json {
		enc := json.NewEncoder(t.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(t.out, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func bootString(b apiv1.Boot) string {
	if b.Loader != "systemd-boot" {
		return b.Loader
	}
	s := fmt.Sprintf("systemd-boot, slot %s (%s)", b.Slot, b.Entry)
	if b.TriesLeft >= 0 {
		s += fmt.Sprintf(", on trial: %d tries left, %d done", b.TriesLeft, b.TriesDone)
	}
	return s
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// short cuts a digest to the 12 hex digits people compare.
func short(d string) string {
	if i := strings.LastIndexAny(d, ":@"); i >= 0 {
		d = d[i+1:]
	}
	return d[:min(12, len(d))]
}

func size(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// criLogWriter turns CRI log lines (time stream tag message) back into what the container wrote:
// messages, partial lines joined. A line that does not parse is printed as it is.
type criLogWriter struct {
	out  io.Writer
	line []byte
}

func (w *criLogWriter) Write(p []byte) (int, error) {
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.emit(w.line[:i])
		w.line = w.line[i+1:]
	}
}

func (w *criLogWriter) emit(line []byte) {
	e, err := logs.ParseEntry(line)
	if err != nil {
		fmt.Fprintf(w.out, "%s\n", line)
		return
	}
	w.out.Write(e.Message)
	if e.Tag == logs.TagFull {
		io.WriteString(w.out, "\n")
	}
}

func (w *criLogWriter) flush() {
	if len(w.line) > 0 {
		w.emit(w.line)
		w.line = nil
	}
}
