// Package metrics is the runtime's Prometheus endpoint (config.toml's [metrics] address): CRI
// requests by method and gRPC code, with latency histograms when grpc_histogram asks for them;
// pods, containers and shims as the runtime holds them at the time of the scrape; image pulls;
// and the Go runtime and the process.
//
// Every daemon gets its own registry from New. The package keeps no state of its own and must
// never register with client_golang's default registerer: two daemons in one test process would
// share (and double-count) its series.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Options configure New.
type Options struct {
	// GRPCHistogram adds ingot_cri_request_duration_seconds (config.toml's grpc_histogram).
	GRPCHistogram bool
}

// Metrics is one daemon's registry and the instruments the runtime updates.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec // nil unless Options.GRPCHistogram

	pullBytes    prometheus.Counter
	pullDuration prometheus.Histogram
	pullFailures prometheus.Counter
}

// pullBuckets span a small image from a local mirror (well under a second) to a large one over
// a slow link (minutes); the default buckets stop at 10 s.
var pullBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// New builds a registry with the Go runtime and process collectors and the runtime's own
// instruments.
func New(o Options) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingot_cri_requests_total",
			Help: "CRI requests answered, by method and gRPC status code.",
		}, []string{"method", "code"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingot_image_pull_bytes_total",
			Help: "Bytes of manifests, configs and layers received from registries by image pulls.",
		}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ingot_image_pull_duration_seconds",
			Help:    "Time taken by image pulls that succeeded.",
			Buckets: pullBuckets,
		}),
		pullFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingot_image_pull_failures_total",
			Help: "Image pulls that failed.",
		}),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.pullBytes, m.pullDuration, m.pullFailures)
	if o.GRPCHistogram {
		m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ingot_cri_request_duration_seconds",
			Help:    "Time taken to answer CRI requests, by method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method"})
		m.reg.MustRegister(m.latency)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// observe records one answered request; method is the gRPC full method name.
func (m *Metrics) observe(fullMethod string, err error, took time.Duration) {
	method := path.Base(fullMethod)
	// The code the client sees: grpc-go answers a plain context error with Canceled or
	// DeadlineExceeded, not Unknown.
	code := status.Code(err)
	if _, ok := status.FromError(err); !ok {
		code = status.FromContextError(err).Code()
	}
	m.requests.WithLabelValues(method, code.String()).Inc()
	if m.latency != nil {
		m.latency.WithLabelValues(method).Observe(took.Seconds())
	}
}

// UnaryInterceptor counts (and, with GRPCHistogram, times) every unary CRI request.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observe(info.FullMethod, err, time.Since(start))
		return resp, err
	}
}

// StreamInterceptor counts streaming CRI requests (GetContainerEvents) when they end.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observe(info.FullMethod, err, time.Since(start))
		return err
	}
}

// ImagePulled records one image pull: the bytes it received (a failed pull received some too)
// and, for a pull that succeeded, how long it took.
func (m *Metrics) ImagePulled(bytes int64, took time.Duration, err error) {
	m.pullBytes.Add(float64(bytes))
	if err != nil {
		m.pullFailures.Inc()
		return
	}
	m.pullDuration.Observe(took.Seconds())
}

// State is what the runtime holds at one moment.
type State struct {
	PodsReady, PodsNotReady int
	// Containers counts containers by CRI state: created, running, exited, unknown.
	Containers map[string]int
	// Shims counts the pod shims the runtime is connected to.
	Shims int
}

// ContainerStates are the values of ingot_containers' state label; each is exported, zero or not,
// so that a dashboard sees every series from the first scrape.
var ContainerStates = []string{"created", "running", "exited", "unknown"}

// WatchState makes every scrape read the runtime's pods, containers and shims from read. It is
// called once, when the runtime's state is loaded.
func (m *Metrics) WatchState(read func() State) {
	m.reg.MustRegister(&stateCollector{read: read,
		pods:  prometheus.NewDesc("ingot_pods", "Pod sandboxes by state (ready, notready).", []string{"state"}, nil),
		ctrs:  prometheus.NewDesc("ingot_containers", "Containers by CRI state (created, running, exited, unknown).", []string{"state"}, nil),
		shims: prometheus.NewDesc("ingot_shims", "Pod shims the runtime is connected to.", nil, nil),
	})
}

// stateCollector reads the runtime's state at scrape time rather than tracking every change:
// the runtime's own maps are the one truth, and a gauge updated by hand drifts from it.
type stateCollector struct {
	read              func() State
	pods, ctrs, shims *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pods
	ch <- c.ctrs
	ch <- c.shims
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	ch <- prometheus.MustNewConstMetric(c.pods, prometheus.GaugeValue, float64(s.PodsReady), "ready")
	ch <- prometheus.MustNewConstMetric(c.pods, prometheus.GaugeValue, float64(s.PodsNotReady), "notready")
	for _, st := range ContainerStates {
		ch <- prometheus.MustNewConstMetric(c.ctrs, prometheus.GaugeValue, float64(s.Containers[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(c.shims, prometheus.GaugeValue, float64(s.Shims))
}

// Endpoint is the HTTP server of a metrics address.
type Endpoint struct {
	l   net.Listener
	srv *http.Server
}

// Serve listens on addr (host:port) and serves the registry at /metrics. An empty addr means the
// endpoint is off: Serve opens nothing and returns nil.
func Serve(addr string, m *Metrics, log *slog.Logger) (*Endpoint, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	e := &Endpoint{l: l, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := e.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "address", addr, "err", err)
		}
	}()
	return e, nil
}

// Addr is the address the endpoint listens on (the port chosen, for ":0").
func (e *Endpoint) Addr() net.Addr { return e.l.Addr() }

// Close stops the endpoint; a nil Endpoint (metrics off) has nothing to close.
func (e *Endpoint) Close() error {
	if e == nil {
		return nil
	}
	return e.srv.Close()
}
