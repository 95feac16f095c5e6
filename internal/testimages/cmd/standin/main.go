// Command standin is a multi-call binary of the small programs critest expects in its test images
// that Debian's busybox-static lacks, plus the pause and nonewprivs programs of Kubernetes' test
// images. It is chosen by the name it runs as (argv[0], else the executable's name, else the first
// argument, as busybox does):
//
//	ipcs [-m|-q|-s|-a]      System V IPC objects of this IPC namespace, in util-linux's format
//	ipcmk -M size|-Q|-S n   create an IPC object with a random key, print its id like util-linux
//	pgrep [-f] [-x] [-l] P  pids of processes whose name (or command line) matches regexp P
//	pause                   sleep until SIGINT/SIGTERM and reap children (the sandbox process)
//	nnp                     print "Effective uid: N" (installed setuid root by nonewprivs)
//
// It uses only the standard library so internal/testimages can build it from embedded sources
// for any GOARCH with CGO_ENABLED=0, offline.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

var applets = map[string]func(args []string) int{
	"ipcs":  ipcs,
	"ipcmk": ipcmk,
	"pgrep": pgrep,
	"pause": pause,
	"nnp":   nnp,
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := applets[name]; !ok {
		if exe, err := os.Executable(); err == nil {
			name = filepath.Base(exe)
		}
	}
	if _, ok := applets[name]; !ok && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	run, ok := applets[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "standin: unknown applet %q (have ipcs, ipcmk, pgrep, pause, nnp)\n", name)
		os.Exit(2)
	}
	os.Exit(run(args))
}

// ---- ipcs ----

// ipcObject is one line of /proc/sysvipc/{shm,msg,sem}.
type ipcObject map[string]string

func readSysvipc(kind string) ([]ipcObject, error) {
	f, err := os.Open("/proc/sysvipc/" + kind)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return nil, sc.Err()
	}
	header := strings.Fields(sc.Text())
	var objs []ipcObject
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		o := ipcObject{}
		for i, h := range header {
			if i < len(fields) {
				o[h] = fields[i]
			}
		}
		objs = append(objs, o)
	}
	return objs, sc.Err()
}

// owners maps uids to names from /etc/passwd, as ipcs prints them.
func owners() map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) > 2 {
			m[f[2]] = f[0]
		}
	}
	return m
}

func ipcs(args []string) int {
	fs := flag.NewFlagSet("ipcs", flag.ContinueOnError)
	m := fs.Bool("m", false, "shared memory segments")
	q := fs.Bool("q", false, "message queues")
	s := fs.Bool("s", false, "semaphore arrays")
	a := fs.Bool("a", false, "all (default)")
	if fs.Parse(args) != nil {
		return 2
	}
	if !*m && !*q && !*s || *a {
		*m, *q, *s = true, true, true
	}
	names := owners()
	owner := func(uid string) string {
		if n, ok := names[uid]; ok {
			return n
		}
		return uid
	}
	key := func(k string) string {
		v, _ := strconv.ParseInt(k, 10, 64)
		return fmt.Sprintf("0x%08x", uint32(v))
	}
	perms := func(p string) string {
		v, _ := strconv.ParseInt(p, 8, 64)
		return strconv.FormatInt(v&0o777, 8)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	status := 0
	section := func(kind, title, header string, line func(o ipcObject) string) {
		objs, err := readSysvipc(kind)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ipcs: %v\n", err)
			status = 1
			return
		}
		fmt.Fprintf(w, "\n------ %s --------\n%s\n", title, header)
		for _, o := range objs {
			fmt.Fprintln(w, line(o))
		}
	}
	if *q {
		section("msg", "Message Queues", fmt.Sprintf("%-10s %-10s %-10s %-10s %-12s %-12s", "key", "msqid", "owner", "perms", "used-bytes", "messages"),
			func(o ipcObject) string {
				return fmt.Sprintf("%-10s %-10s %-10s %-10s %-12s %-12s", key(o["key"]), o["msqid"], owner(o["uid"]), perms(o["perms"]), o["cbytes"], o["qnum"])
			})
	}
	if *m {
		section("shm", "Shared Memory Segments", fmt.Sprintf("%-10s %-10s %-10s %-10s %-10s %-10s %-12s", "key", "shmid", "owner", "perms", "bytes", "nattch", "status"),
			func(o ipcObject) string {
				return fmt.Sprintf("%-10s %-10s %-10s %-10s %-10s %-10s %-12s", key(o["key"]), o["shmid"], owner(o["uid"]), perms(o["perms"]), o["size"], o["nattch"], "")
			})
	}
	if *s {
		section("sem", "Semaphore Arrays", fmt.Sprintf("%-10s %-10s %-10s %-10s %-10s", "key", "semid", "owner", "perms", "nsems"),
			func(o ipcObject) string {
				return fmt.Sprintf("%-10s %-10s %-10s %-10s %-10s", key(o["key"]), o["semid"], owner(o["uid"]), perms(o["perms"]), o["nsems"])
			})
	}
	fmt.Fprintln(w)
	return status
}

// ---- ipcmk ----

const (
	ipcCreat = 0o1000
	ipcExcl  = 0o2000
)

func ipcmk(args []string) int {
	fs := flag.NewFlagSet("ipcmk", flag.ContinueOnError)
	shm := fs.String("M", "", "create a shared memory segment of this many bytes")
	msg := fs.Bool("Q", false, "create a message queue")
	sem := fs.Int("S", 0, "create a semaphore array of this many elements")
	mode := fs.String("p", "644", "permissions (octal)")
	if fs.Parse(args) != nil {
		return 2
	}
	perm, err := strconv.ParseUint(*mode, 8, 32)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ipcmk: bad permissions %q\n", *mode)
		return 2
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		fmt.Fprintf(os.Stderr, "ipcmk: random key: %v\n", err)
		return 1
	}
	key := uintptr(int32(binary.LittleEndian.Uint32(b[:]) &^ (1 << 31)))
	flags := uintptr(ipcCreat | ipcExcl | perm)
	did := false
	get := func(what string, trap, a2, a3 uintptr) {
		did = true
		id, _, errno := syscall.Syscall(trap, key, a2, a3)
		if errno != 0 {
			fmt.Fprintf(os.Stderr, "ipcmk: create %s: %v\n", strings.ToLower(what), errno)
			err = errno
			return
		}
		fmt.Printf("%s id: %d\n", what, id)
	}
	if *shm != "" {
		size, perr := strconv.ParseUint(*shm, 10, 64)
		if perr != nil {
			fmt.Fprintf(os.Stderr, "ipcmk: bad size %q\n", *shm)
			return 2
		}
		get("Shared memory", syscall.SYS_SHMGET, uintptr(size), flags)
	}
	if *msg {
		get("Message queue", syscall.SYS_MSGGET, flags, 0)
	}
	if *sem > 0 {
		get("Semaphore", syscall.SYS_SEMGET, uintptr(*sem), flags)
	}
	if !did {
		fmt.Fprintln(os.Stderr, "usage: ipcmk -M size | -Q | -S nsems [-p mode]")
		return 2
	}
	if err != nil {
		return 1
	}
	return 0
}

// ---- pgrep ----

func pgrep(args []string) int {
	fs := flag.NewFlagSet("pgrep", flag.ContinueOnError)
	full := fs.Bool("f", false, "match the full command line")
	exact := fs.Bool("x", false, "match the whole name")
	list := fs.Bool("l", false, "print names too")
	if fs.Parse(args) != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: pgrep [-f] [-x] [-l] PATTERN")
		return 2
	}
	pattern := fs.Arg(0)
	if *exact {
		pattern = "^(?:" + pattern + ")$"
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgrep: %v\n", err)
		return 2
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgrep: %v\n", err)
		return 3
	}
	var pids []int
	names := map[int]string{}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue // gone
		}
		name := strings.TrimSuffix(string(comm), "\n")
		subject := name
		if *full {
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			if len(cmdline) > 0 {
				subject = strings.TrimRight(strings.ReplaceAll(string(cmdline), "\x00", " "), " ")
			}
		}
		if re.MatchString(subject) {
			pids = append(pids, pid)
			names[pid] = name
		}
	}
	sort.Ints(pids)
	for _, p := range pids {
		if *list {
			fmt.Printf("%d %s\n", p, names[p])
		} else {
			fmt.Println(p)
		}
	}
	if len(pids) == 0 {
		return 1
	}
	return 0
}

// ---- pause ----

func pause(args []string) int {
	if len(args) > 0 && args[0] == "-v" {
		fmt.Println("pause (ingot test stand-in)")
		return 0
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return 0
		}
		for { // reap every exited child; a shared PID namespace makes us their parent
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || errors.Is(err, syscall.ECHILD) {
				break
			}
		}
	}
	return 0
}

// ---- nnp ----

func nnp([]string) int {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
	return 0
}
