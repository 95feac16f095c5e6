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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Validity of what the PKI issues. The CAs outlive many cluster runs (down --keep, up again);
// leaf certificates are renewed by generating a new state directory.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
	// clockSkew backdates every certificate, so a guest whose clock lags the host's a little
	// still accepts them.
	clockSkew = 5 * time.Minute
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
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

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

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(now time.Time, name string) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate %s key: %w", name, err)
	}
	sn, err := serial()
	if err != nil {
		return KeyPair{}, err
	}
	t := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CAs sign leaves only, never another CA.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, t, t, key.Public(), key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("self-sign %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Cert: cert, Key: key}, nil
}

func issue(now time.Time, ca KeyPair, t x509.Certificate) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	if t.SerialNumber, err = serial(); err != nil {
		return KeyPair{}, err
	}
	t.NotBefore = now.Add(-clockSkew)
	t.NotAfter = now.Add(CertValidity)
	t.KeyUsage = x509.KeyUsageDigitalSignature
	t.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, &t, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return KeyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{Cert: cert, Key: key}, nil
}

// CertPEM is the certificate in PEM.
func (k KeyPair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Raw})
}

// KeyPEM is the private key in PKCS #8 PEM.
func (k KeyPair) KeyPEM() ([]byte, error) { return keyPEM(k.Key) }

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
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
	k, err := keyPEM(p.ServiceAccount)
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
func writeFile(name string, data []byte, mode os.FileMode) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
