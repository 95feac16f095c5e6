// Command webserver stands in for the web servers of critest's images. It is chosen by the name
// it runs as (argv[0], else the executable's name):
//
//	nginx              nginx as critest probes it: serves / with 200 on every "listen N;" port in
//	                   /etc/nginx/conf.d/*.conf (80 when none), writes /var/run/nginx.pid, and
//	                   retitles itself "nginx: master process …" (critest greps /proc/1/cmdline
//	                   for "master process" and runs `pidof nginx`)
//	httpd-foreground   Apache httpd as critest probes it: serves / with 200 on port 80 (or $PORT)
//	                   and logs a line naming httpd on stderr
//
// Both exit 0 on SIGTERM, SIGINT, SIGQUIT and SIGWINCH (Apache's stop signal): as PID 1 of a
// container a signal without a handler would be ignored.
//
// It uses only the standard library so internal/testimages can build it from embedded sources
// for any GOARCH with CGO_ENABLED=0, offline.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

const nginxTitle = "nginx: master process"

func main() {
	name := filepath.Base(os.Args[0])
	if strings.HasPrefix(os.Args[0], nginxTitle) {
		name = "nginx"
	}
	switch name {
	case "nginx", "httpd-foreground", "httpd":
	default:
		if exe, err := os.Executable(); err == nil {
			name = filepath.Base(exe)
		}
	}
	var err error
	switch name {
	case "nginx":
		err = nginx()
	case "httpd-foreground", "httpd":
		err = httpd()
	default:
		err = fmt.Errorf("unknown server %q (have nginx, httpd-foreground)", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// serve listens on every port and returns when a stop signal arrives or a listener fails.
func serve(ports []int, page string) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGWINCH)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})
	failed := make(chan error, len(ports))
	for _, p := range ports {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return err
		}
		go func() { failed <- http.Serve(l, handler) }()
	}
	select {
	case <-stop:
		return nil
	case err := <-failed:
		return err
	}
}

var listenRE = regexp.MustCompile(`(?m)^\s*listen\s+(?:\[::\]:|[0-9.]+:)?([0-9]+)[^;]*;`)

// nginxPorts reads the listen ports of the server blocks in /etc/nginx/conf.d.
func nginxPorts() []int {
	seen := map[int]bool{}
	files, _ := filepath.Glob("/etc/nginx/conf.d/*.conf")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, m := range listenRE.FindAllStringSubmatch(string(b), -1) {
			if p, err := strconv.Atoi(m[1]); err == nil {
				seen[p] = true
			}
		}
	}
	if len(seen) == 0 {
		return []int{80}
	}
	var ports []int
	for p := range seen {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	return ports
}

func nginx() error {
	if !strings.HasPrefix(os.Args[0], nginxTitle) {
		// Real nginx rewrites its argv; re-executing with a new argv[0] gives the same
		// /proc/PID/cmdline, and exec keeps the PID and the comm "nginx" for pidof.
		if exe, err := os.Executable(); err == nil {
			argv := []string{nginxTitle + " " + strings.Join(os.Args, " ")}
			err = syscall.Exec(exe, argv, os.Environ())
			fmt.Fprintf(os.Stderr, "nginx: retitle: %v\n", err)
		}
	}
	pidFile := "/var/run/nginx.pid"
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	page := "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n" +
		"<body><h1>Welcome to nginx!</h1><p>ingot test stand-in.</p></body></html>\n"
	if b, err := os.ReadFile("/usr/share/nginx/html/index.html"); err == nil {
		page = string(b)
	}
	return serve(nginxPorts(), page)
}

func httpd() error {
	port := 80
	if p, err := strconv.Atoi(os.Getenv("PORT")); err == nil {
		port = p
	}
	fmt.Fprintf(os.Stderr, "httpd: ingot stand-in for Apache httpd, listening on port %d\n", port)
	return serve([]int{port}, "<html><body><h1>It works!</h1></body></html>\n")
}
