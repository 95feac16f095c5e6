package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"ingot.dev/ingot/internal/certs"
)

// Validity of what the PKI issues. The CAs outlive many cluster runs (down --keep, up again);
// leaf certificates are renewed by generating a new state directory.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
)

// GuestHostIP is the address a QEMU user-network guest reaches the API server at: a guestfwd
// rule forwards connections to it onto the host's loopback. It is not 10.0.2.2, the address
// QEMU itself answers as the host: QEMU refuses a guestfwd rule on that address ("Conflicting/
// invalid host:port in guest forwarding rule").
var GuestHostIP = net.IPv4(10, 0, 2, 100)

// Names of the users and groups the certificates carry.
const (
	AdminUser         = "kubernetes-admin"
	MastersGroup      = "system:masters"
	ControllerManager = "system:kube-controller-manager"
	KubeletClientUser = "kube-apiserver-kubelet-client"
	EtcdClientUser    = "kube-apiserver-etcd-client"
)

// KeyPair is a certificate and its private key.
type KeyPair = certs.KeyPair

// PKI is everything the control plane authenticates with. Two CAs: the cluster CA (clients of
// the API server, its serving certificate, node certificates the controller manager signs) and
// an etcd CA, so that no certificate the cluster CA issues — a node's, say — opens etcd.
type PKI struct {
	CA     KeyPair
	EtcdCA KeyPair
	// APIServer serves the API on 127.0.0.1, on GuestHostIP (as guests see it) and on the
	// kubernetes Service's IP (as pods see it).
	APIServer         KeyPair
	KubeletClient     KeyPair // the API server's client certificate towards kubelets
	EtcdServer        KeyPair // etcd's serving and peer certificate
	EtcdClient        KeyPair // the API server's client certificate towards etcd
	Admin             KeyPair // O=system:masters, for kubectl and `ingot cluster` itself
	ControllerManager KeyPair
	// ServiceAccount signs service account tokens (the controller manager and the API
	// server); its public half verifies them.
	ServiceAccount crypto.Signer
}

// NewPKI generates a PKI valid from now. serviceIP is the first address of the service range
// (the kubernetes Service's ClusterIP).
func NewPKI(now time.Time, serviceIP net.IP) (*PKI, error) {
	p := &PKI{}
	var err error
	if p.CA, err = newCA(now, "ingot-cluster-ca"); err != nil {
		return nil, err
	}
	if p.EtcdCA, err = newCA(now, "ingot-etcd-ca"); err != nil {
		return nil, err
	}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	leaves := []struct {
		kp *KeyPair
		ca KeyPair
		t  x509.Certificate
	}{
		{&p.APIServer, p.CA, x509.Certificate{
			Subject:     pkix.Name{CommonName: "kube-apiserver"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: append(loopback, GuestHostIP, serviceIP),
			DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local"},
		}},
		{&p.KubeletClient, p.CA, clientTemplate(KubeletClientUser)},
		{&p.Admin, p.CA, clientTemplate(AdminUser, MastersGroup)},
		{&p.ControllerManager, p.CA, clientTemplate(ControllerManager)},
		{&p.EtcdServer, p.EtcdCA, x509.Certificate{
			Subject: pkix.Name{CommonName: "etcd"},
			// The same certificate serves clients and the (single) peer, which connects
			// as a client too.
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: loopback,
			DNSNames:    []string{"localhost"},
		}},
		{&p.EtcdClient, p.EtcdCA, clientTemplate(EtcdClientUser)},
	}
	for _, l := range leaves {
		if *l.kp, err = issue(now, l.ca, l.t); err != nil {
			return nil, fmt.Errorf("issue %s certificate: %w", l.t.Subject.CommonName, err)
		}
	}
	if p.ServiceAccount, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generate service account key: %w", err)
	}
	return p, nil
}

func clientTemplate(user string, groups ...string) x509.Certificate {
	return x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

func newCA(now time.Time, name string) (KeyPair, error) {
	return certs.NewCA(now, name, CAValidity)
}

func issue(now time.Time, ca KeyPair, t x509.Certificate) (KeyPair, error) {
	return certs.Issue(now, ca, t, CertValidity)
}

// Files of the PKI directory, relative to it.
const (
	FileCA                = "ca.crt"
	FileCAKey             = "ca.key"
	FileEtcdCA            = "etcd-ca.crt"
	FileAPIServer         = "apiserver"
	FileKubeletClient     = "apiserver-kubelet-client"
	FileEtcdServer        = "etcd-server"
	FileEtcdClient        = "apiserver-etcd-client"
	FileAdmin             = "admin"
	FileControllerManager = "controller-manager"
	FileSAKey             = "sa.key"
	FileSAPub             = "sa.pub"
)

// Write stores the PKI in dir: NAME.crt (0644) and NAME.key (0600) for each pair, the CA's
// key (the controller manager signs node certificates with it), sa.key and sa.pub. The etcd
// CA's key is not kept: nothing issues etcd certificates after this.
func (p *PKI) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	pairs := []struct {
		name string
		kp   KeyPair
	}{
		{"ca", p.CA}, {"etcd-ca", p.EtcdCA}, {FileAPIServer, p.APIServer}, {FileKubeletClient, p.KubeletClient},
		{FileEtcdServer, p.EtcdServer}, {FileEtcdClient, p.EtcdClient}, {FileAdmin, p.Admin},
		{FileControllerManager, p.ControllerManager},
	}
	for _, pr := range pairs {
		if err := writeFile(filepath.Join(dir, pr.name+".crt"), pr.kp.CertPEM(), 0o644); err != nil {
			return err
		}
		if pr.name == "etcd-ca" {
			continue
		}
		k, err := pr.kp.KeyPEM()
		if err != nil {
			return fmt.Errorf("encode %s key: %w", pr.name, err)
		}
		if err := writeFile(filepath.Join(dir, pr.name+".key"), k, 0o600); err != nil {
			return err
		}
	}
	k, err := certs.KeyPEM(p.ServiceAccount)
	if err != nil {
		return fmt.Errorf("encode service account key: %w", err)
	}
	if err := writeFile(filepath.Join(dir, FileSAKey), k, 0o600); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(p.ServiceAccount.Public())
	if err != nil {
		return fmt.Errorf("encode service account public key: %w", err)
	}
	return writeFile(filepath.Join(dir, FileSAPub), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// writeFile writes data with mode exactly (whatever the umask), replacing the file whole.
var writeFile = certs.WriteFile
