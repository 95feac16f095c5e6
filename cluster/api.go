package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client talks to the API server with HTTPS and JSON: a client certificate or a bearer token,
// the cluster CA as the only root.
type Client struct {
	Server string // https://127.0.0.1:PORT
	Bearer string // a token; empty with a client certificate
	http   *http.Client
}

// NewClient returns a client trusting caPEM. cert may be nil (then set Bearer).
func NewClient(server string, caPEM []byte, cert *tls.Certificate) (*Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("API client: no certificate in the CA file")
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	// No proxy: the API server is on the loopback, and the environment's proxy must not see
	// the admin's requests.
	tr := &http.Transport{TLSClientConfig: cfg, Proxy: nil}
	return &Client{Server: server, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// StatusError is a response that is not 2xx: the API's Status message when it sent one.
type StatusError struct {
	Method, Path string
	Code         int
	Reason       string // the Status's reason (AlreadyExists, Forbidden, …)
	Message      string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Code, e.Reason, e.Message)
}

// Do sends body (JSON-encoded unless nil) and decodes a 2xx answer into out (unless nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.Bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &StatusError{Method: method, Path: path, Code: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		var st struct{ Reason, Message string }
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			e.Reason, e.Message = st.Reason, st.Message
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Create POSTs obj to path; an object that exists already (up after down --keep) is left as is.
func (c *Client) Create(ctx context.Context, path string, obj any) error {
	err := c.Do(ctx, http.MethodPost, path, obj, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusConflict {
		return nil
	}
	return err
}

// Ready asks /readyz once and returns nil when it answers 200 ok.
func (c *Client) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// clusterRoleBinding binds a ClusterRole to a user or group.
func clusterRoleBinding(name, role, kind, subject string) map[string]any {
	return map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1",
		"kind":       "ClusterRoleBinding",
		"metadata":   map[string]any{"name": name},
		"roleRef":    map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
		"subjects":   []map[string]any{{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}},
	}
}

// joinBindings are the RBAC bindings a kubelet needs to TLS-bootstrap with a bootstrap token,
// named as kubeadm names them, plus the API server's access to kubelets.
func joinBindings() []map[string]any {
	return []map[string]any{
		// The token may create a CSR and read it back …
		clusterRoleBinding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", "Group", BootstrapGroup),
		// … which the controller manager's csrapproving approves: a new node's client
		// certificate …
		clusterRoleBinding("kubeadm:node-autoapprove-bootstrap",
			"system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group", BootstrapGroup),
		// … and its renewal by the node itself.
		clusterRoleBinding("kubeadm:node-autoapprove-certificate-rotation",
			"system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group", "system:nodes"),
		// kubectl logs, exec and port-forward go through the API server to the kubelet,
		// which asks the API server whether this user may.
		clusterRoleBinding("ingot:apiserver-kubelet-api-admin", "system:kubelet-api-admin", "User", KubeletClientUser),
		// kube-proxy runs on each worker with the kubelet's credentials (see KubeProxyPod).
		clusterRoleBinding("ingot:node-proxier", "system:node-proxier", "Group", "system:nodes"),
	}
}
