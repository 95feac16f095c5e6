package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"ingot.dev/ingot/profiles/nodeconfig"
)

// Files and directories of the state directory.
const (
	FileState          = "cluster.json"
	FileAdminConfig    = "admin.kubeconfig"
	FileNodeConfig     = "node.toml"
	FileToken          = "bootstrap-token"
	fileCMConfig       = "controller-manager.kubeconfig"
	fileEgressSelector = "egress-selector.yaml"
	dirPKI             = "pki"
	dirEtcd            = "etcd"
	dirLogs            = "logs"
	dirRun             = "run"
	dirCMCerts         = "controller-manager"
)

// The control plane's processes, in start order; down stops them in reverse.
const (
	procProxy             = "kubelet-proxy"
	procEtcd              = "etcd"
	procAPIServer         = "kube-apiserver"
	procControllerManager = "kube-controller-manager"
)

var procs = []string{procProxy, procEtcd, procAPIServer, procControllerManager}

// DefaultServiceCIDR is the Service IP range; its first address is the kubernetes Service's.
const DefaultServiceCIDR = "10.96.0.0/12"

// DefaultTokenTTL is how long the bootstrap token authenticates: long enough for the workers
// of one `up` to join. A joined node renews its certificate with the certificate itself.
const DefaultTokenTTL = 24 * time.Hour

// DefaultStateDir is $XDG_STATE_HOME/ingot/cluster, or ~/.cache/ingot/cluster.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ingot", "cluster")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "ingot-cluster")
	}
	return filepath.Join(home, ".cache", "ingot", "cluster")
}

// Options configure Up.
type Options struct {
	StateDir string
	Binaries Binaries
	// ProxyCommand runs ServeKubeletProxy for StateDir as a process of its own (it must outlive
	// `ingot cluster up`): `ingot cluster kubelet-proxy --state DIR`.
	ProxyCommand []string
	APIPort      int           // the API server's port on 127.0.0.1; 0 picks a free one
	TokenTTL     time.Duration // 0 is DefaultTokenTTL
	ServiceCIDR  string        // "" is DefaultServiceCIDR
	Log          *slog.Logger
}

// State is what Up records in cluster.json: for down, for the worker VMs' forwards, for people.
type State struct {
	APIPort               int `json:"apiPort"`
	EtcdPort              int `json:"etcdPort"`
	EtcdPeerPort          int `json:"etcdPeerPort"`
	ControllerManagerPort int `json:"controllerManagerPort"`
	// Server is the API server's URL on the host; GuestServer is the same server as a QEMU
	// guest reaches it, through a guestfwd from GuestHostIP:APIPort to 127.0.0.1:APIPort.
	Server      string `json:"server"`
	GuestServer string `json:"guestServer"`
	TokenID     string `json:"tokenID"`
	ServiceCIDR string `json:"serviceCIDR"`
}

// ReadState reads dir's cluster.json.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileState))
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read cluster state %s: %w", filepath.Join(dir, FileState), err)
	}
	return st, nil
}

// child is a process Up started; done closes when it exits.
type child struct {
	name string
	pid  int
	done chan struct{}
	err  error
}

type upper struct {
	Options
	dir      string // absolute StateDir
	st       *State
	children []*child
}

// Up starts the control plane in opts.StateDir and returns when the API server is ready, the
// bootstrap token and the join RBAC are in place and the controller manager is healthy. A state
// directory kept by `down --keep` is started again with its PKI, token, ports and etcd data.
// On failure, whatever Up started is stopped again and the logs stay in the state directory.
func Up(ctx context.Context, opts Options) (*State, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	dir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	u := &upper{Options: opts, dir: dir}
	for _, p := range procs {
		if pid, ok := running(dir, p); ok {
			return nil, fmt.Errorf("cluster up: %s (pid %d) of %s is running already: run ingot cluster down first", p, pid, dir)
		}
	}
	if err := u.run(ctx); err != nil {
		u.stop()
		return nil, fmt.Errorf("cluster up: %w (logs in %s)", err, filepath.Join(dir, dirLogs))
	}
	return u.st, nil
}

func (u *upper) path(elem ...string) string {
	return filepath.Join(append([]string{u.dir}, elem...)...)
}

func (u *upper) run(ctx context.Context) error {
	for _, d := range []string{u.dir, u.path(dirRun), u.path(dirLogs), u.path(dirEtcd), u.path(dirCMCerts)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	_, svcNet, err := net.ParseCIDR(u.ServiceCIDR)
	if err != nil || svcNet.IP.To4() == nil {
		return fmt.Errorf("service CIDR %q: want an IPv4 range", u.ServiceCIDR)
	}
	if err := u.ports(); err != nil {
		return err
	}
	if err := u.pki(svcNet); err != nil {
		return err
	}
	token, err := u.token()
	if err != nil {
		return err
	}
	u.st.TokenID = token.ID
	if err := u.writeConfigs(token); err != nil {
		return err
	}
	if err := u.startProcesses(ctx, svcNet); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(u.path(dirPKI, FileCA))
	if err != nil {
		return err
	}
	admin, err := tls.LoadX509KeyPair(u.path(dirPKI, FileAdmin+".crt"), u.path(dirPKI, FileAdmin+".key"))
	if err != nil {
		return fmt.Errorf("load admin certificate: %w", err)
	}
	c, err := NewClient(u.st.Server, caPEM, &admin)
	if err != nil {
		return err
	}
	if err := u.wait(ctx, procAPIServer, c.Ready); err != nil {
		return err
	}
	if err := c.Create(ctx, "/api/v1/namespaces/kube-system/secrets", token.secretObject(time.Now().Add(u.TokenTTL))); err != nil {
		return fmt.Errorf("create bootstrap token: %w", err)
	}
	for _, b := range joinBindings() {
		if err := c.Create(ctx, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", b); err != nil {
			return fmt.Errorf("create RBAC for joining nodes: %w", err)
		}
	}
	if err := u.start(procControllerManager, u.controllerManagerArgs()); err != nil {
		return err
	}
	return u.wait(ctx, procControllerManager, u.controllerManagerHealthy)
}

// freePort asks the kernel for a free port on 127.0.0.1. Another program may take it before the
// control plane binds it; up then fails naming the port, and a second up picks another.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ports keeps a kept state's ports (etcd's member remembers its peer URL; worker VMs their
// server URL), else picks free ones.
func (u *upper) ports() error {
	st, err := ReadState(u.dir)
	if err != nil {
		st = &State{}
	}
	if u.APIPort != 0 {
		st.APIPort = u.APIPort
	}
	for _, p := range []*int{&st.APIPort, &st.EtcdPort, &st.EtcdPeerPort, &st.ControllerManagerPort} {
		if *p == 0 {
			if *p, err = freePort(); err != nil {
				return err
			}
		}
	}
	st.Server = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(st.APIPort))
	st.GuestServer = "https://" + net.JoinHostPort(GuestHostIP.String(), strconv.Itoa(st.APIPort))
	st.ServiceCIDR = u.ServiceCIDR
	u.st = st
	return nil
}

func (u *upper) pki(svcNet *net.IPNet) error {
	if _, err := os.Stat(u.path(dirPKI, FileCA)); err == nil {
		return nil
	}
	svcIP := svcNet.IP.To4()
	svcIP = net.IPv4(svcIP[0], svcIP[1], svcIP[2], svcIP[3]+1)
	p, err := NewPKI(time.Now(), svcIP)
	if err != nil {
		return err
	}
	return p.Write(u.path(dirPKI))
}

func (u *upper) token() (Token, error) {
	b, err := os.ReadFile(u.path(FileToken))
	if err == nil {
		return ParseToken(strings.TrimSpace(string(b)))
	}
	t, err := NewToken()
	if err != nil {
		return Token{}, err
	}
	return t, writeFile(u.path(FileToken), []byte(t.String()+"\n"), 0o600)
}

func (u *upper) writeConfigs(token Token) error {
	read := func(name string) ([]byte, error) { return os.ReadFile(u.path(dirPKI, name)) }
	caPEM, err := read(FileCA)
	if err != nil {
		return err
	}
	for _, k := range []struct{ file, pair, user string }{
		{FileAdminConfig, FileAdmin, AdminUser},
		{fileCMConfig, FileControllerManager, ControllerManager},
	} {
		cert, err := read(k.pair + ".crt")
		if err != nil {
			return err
		}
		key, err := read(k.pair + ".key")
		if err != nil {
			return err
		}
		if err := writeFile(u.path(k.file), Kubeconfig(u.st.Server, caPEM, k.user, cert, key), 0o600); err != nil {
			return err
		}
	}
	egress := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, u.path(FileKubeletProxySocket))
	if err := writeFile(u.path(fileEgressSelector), []byte(egress), 0o644); err != nil {
		return err
	}
	nc, err := JoinConfig(u.st.GuestServer, caPEM, token)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(u.st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(u.path(FileState), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return writeFile(u.path(FileNodeConfig), nc, 0o600)
}

// JoinConfig is the node.toml fragment a worker joins with: its [kubernetes] table. A node's
// own settings (hostname, labels) go beside it in the same file.
func JoinConfig(server string, caPEM []byte, token Token) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by ingot cluster up: how a worker joins this cluster (docs/cluster.md).\n")
	fmt.Fprintf(&b, "# It holds the bootstrap token: keep it as private as the cluster.\n")
	fmt.Fprintf(&b, "[kubernetes]\napi_server = %q\nca = \"\"\"\n%s\"\"\"\nbootstrap_token = %q\n",
		server, caPEM, token.String())
	if _, err := nodeconfig.Parse("node.toml", b.Bytes()); err != nil {
		return nil, fmt.Errorf("node config for joining: %w", err)
	}
	return b.Bytes(), nil
}

func (u *upper) startProcesses(ctx context.Context, svcNet *net.IPNet) error {
	if len(u.ProxyCommand) > 0 {
		if err := u.start(procProxy, u.ProxyCommand); err != nil {
			return err
		}
	}
	pki := func(name string) string { return u.path(dirPKI, name) }
	local := func(port int) string { return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
	etcdArgs := []string{u.Binaries.Etcd,
		"--name=ingot",
		"--data-dir=" + u.path(dirEtcd),
		"--listen-client-urls=" + local(u.st.EtcdPort),
		"--advertise-client-urls=" + local(u.st.EtcdPort),
		"--listen-peer-urls=" + local(u.st.EtcdPeerPort),
		"--initial-advertise-peer-urls=" + local(u.st.EtcdPeerPort),
		"--initial-cluster=ingot=" + local(u.st.EtcdPeerPort),
		"--initial-cluster-state=new",
		"--cert-file=" + pki(FileEtcdServer+".crt"), "--key-file=" + pki(FileEtcdServer+".key"),
		"--trusted-ca-file=" + pki(FileEtcdCA), "--client-cert-auth=true",
		"--peer-cert-file=" + pki(FileEtcdServer+".crt"), "--peer-key-file=" + pki(FileEtcdServer+".key"),
		"--peer-trusted-ca-file=" + pki(FileEtcdCA), "--peer-client-cert-auth=true",
	}
	if err := u.start(procEtcd, etcdArgs); err != nil {
		return err
	}
	apiArgs := []string{u.Binaries.APIServer,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(u.st.APIPort),
		// The kubernetes Service's endpoint: what pods on the guests reach the API server at.
		"--advertise-address=" + GuestHostIP.String(),
		"--etcd-servers=" + local(u.st.EtcdPort),
		"--etcd-cafile=" + pki(FileEtcdCA),
		"--etcd-certfile=" + pki(FileEtcdClient+".crt"), "--etcd-keyfile=" + pki(FileEtcdClient+".key"),
		"--tls-cert-file=" + pki(FileAPIServer+".crt"), "--tls-private-key-file=" + pki(FileAPIServer+".key"),
		"--client-ca-file=" + pki(FileCA),
		"--kubelet-client-certificate=" + pki(FileKubeletClient+".crt"),
		"--kubelet-client-key=" + pki(FileKubeletClient+".key"),
		// See kubeletproxy.go: kubelets are reached by InternalIP through the egress proxy.
		"--kubelet-preferred-address-types=InternalIP",
		"--egress-selector-config-file=" + u.path(fileEgressSelector),
		"--service-cluster-ip-range=" + svcNet.String(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki(FileSAPub),
		"--service-account-signing-key-file=" + pki(FileSAKey),
		"--authorization-mode=Node,RBAC",
		"--enable-bootstrap-token-auth=true",
		"--enable-admission-plugins=NodeRestriction",
		// kube-proxy and CNI pods run privileged.
		"--allow-privileged=true",
		"--cert-dir=" + u.path(dirPKI),
	}
	return u.start(procAPIServer, apiArgs)
}

func (u *upper) controllerManagerArgs() []string {
	pki := func(name string) string { return u.path(dirPKI, name) }
	kc := u.path(fileCMConfig)
	return []string{u.Binaries.ControllerManager,
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(u.st.ControllerManagerPort),
		"--cert-dir=" + u.path(dirCMCerts),
		"--leader-elect=false",
		// csrsigning, csrapproving and serviceaccount-token run by default; the bootstrap
		// token's signer and cleaner do not.
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--cluster-signing-cert-file=" + pki(FileCA), "--cluster-signing-key-file=" + pki(FileCAKey),
		"--root-ca-file=" + pki(FileCA),
		"--service-account-private-key-file=" + pki(FileSAKey),
		"--use-service-account-credentials=true",
	}
}

// controllerManagerHealthy asks the controller manager's /healthz once. Its serving
// certificate is one it made itself in its cert dir, and /healthz says nothing secret, so the
// certificate is not checked: this only tells that it runs.
func (u *upper) controllerManagerHealthy(ctx context.Context) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"https://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(u.st.ControllerManagerPort))+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// childEnv is the environment without proxy settings (every connection the control plane makes
// goes to the loopback, or to kubelets through the egress proxy) nor a service manager's socket.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		// NOTIFY_SOCKET: etcd would tell a systemd unit running ingot that it is ready.
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// start runs argv as name: in a session of its own (so a terminal's Ctrl-C on `up` does not
// reach it and `down` can signal its whole group), output appended to logs/NAME.log, its pid in
// run/NAME.pid.
func (u *upper) start(name string, argv []string) error {
	logf, err := os.OpenFile(u.path(dirLogs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = u.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, pid: cmd.Process.Pid, done: make(chan struct{})}
	u.children = append(u.children, c)
	// Reap it (while up runs), and let wait notice an early exit.
	go func() { c.err = cmd.Wait(); close(c.done) }()
	u.Log.Info("started", "process", name, "pid", cmd.Process.Pid, "log", u.path(dirLogs, name+".log"))
	return writeFile(u.path(dirRun, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// wait polls ready until it succeeds, ctx ends, or a child exits (then the error quotes the end
// of its log).
func (u *upper) wait(ctx context.Context, name string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, c := range u.children {
			select {
			case <-c.done:
				return fmt.Errorf("%s exited (%v) while waiting for %s; its log ends:\n%s", c.name, c.err, name, logTail(u.path(dirLogs, c.name+".log"), 15))
			default:
			}
		}
		if last = ready(ctx); last == nil {
			u.Log.Info("ready", "process", name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last answer: %v)", name, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func logTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "(" + file + " is empty)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends what a failed up started, by the pids it holds: a process that has just exec'd may
// not show its command line yet, which is what running (for down) goes by.
func (u *upper) stop() {
	for i := len(u.children) - 1; i >= 0; i-- {
		c := u.children[i]
		for _, s := range []struct {
			sig   syscall.Signal
			grace time.Duration
		}{{syscall.SIGTERM, 20 * time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
			syscall.Kill(-c.pid, s.sig)
			select {
			case <-c.done:
			case <-time.After(s.grace):
				continue
			}
			break
		}
		os.Remove(u.path(dirRun, c.name+".pid"))
	}
}

// running reports the pid of dir's process name if it runs: the pid file's process, if its
// command line names the state directory (a pid reused by another program does not; nor does a
// zombie, whose command line is empty).
func running(dir, name string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, dirRun, name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	// The directory as a path prefix or a whole argument: /x/cluster is not /x/cluster2.
	if err != nil || !(bytes.Contains(cmdline, []byte(dir+"/")) || bytes.Contains(cmdline, []byte(dir+"\x00"))) {
		return 0, false
	}
	return pid, true
}

// stopProcess ends dir's process name: SIGTERM to its process group, SIGKILL if it has not
// gone after 20s.
func stopProcess(dir, name string) error {
	pidFile := filepath.Join(dir, dirRun, name+".pid")
	pid, ok := running(dir, name)
	if ok {
		for _, s := range []struct {
			sig   syscall.Signal
			grace time.Duration
		}{{syscall.SIGTERM, 20 * time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
			if err := syscall.Kill(-pid, s.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("stop %s (pid %d): %w", name, pid, err)
			}
			deadline := time.Now().Add(s.grace)
			for ok && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				_, ok = running(dir, name)
			}
			if !ok {
				break
			}
		}
		if ok {
			return fmt.Errorf("stop %s (pid %d): still running after SIGKILL", name, pid)
		}
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Down stops the control plane of stateDir and, unless keep, removes the directory.
func Down(stateDir string, keep bool) error {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	// Refuse a directory up did not make: down removes it whole.
	if _, err := os.Stat(filepath.Join(dir, FileState)); err != nil {
		return fmt.Errorf("cluster down: %s holds no cluster (no %s): %w", dir, FileState, err)
	}
	var errs []error
	// In reverse: the workers (they need the control plane), then the control plane in reverse
	// start order.
	stop := append(slices.Clone(procs), workerNames(dir)...)
	for i := len(stop) - 1; i >= 0; i-- {
		if err := stopProcess(dir, stop[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster down: %w", err)
	}
	if keep {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("cluster down: remove %s: %w", dir, err)
	}
	return nil
}

// KubeletPort is the port the kubelet serves on inside a worker; what the API server asks the
// kubelet proxy for.
const KubeletPort = 10250

// KubeletHostFwd is the hostfwd rule (qemu.Config.HostFwd) that forwards 127.0.0.1:port to a
// worker's kubelet; record the same port with AddKubelet.
func KubeletHostFwd(port int) string {
	return fmt.Sprintf("tcp:127.0.0.1:%d-:%d", port, KubeletPort)
}
