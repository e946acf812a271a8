package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// serveConfig is everything `dicomgw serve` is told by its flags.
type serveConfig struct {
	listen          string
	aeTitles        []string
	acceptUnknown   bool
	spoolDir        string
	maxAssociations int
	maxPDULength    uint32
	artimTimeout    time.Duration
	idleTimeout     time.Duration
	writeTimeout    time.Duration
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string

	// Forwarding.
	stowURL           string
	archiveDir        string
	forwardWorkers    int
	batchMaxInstances int
	batchMaxBytes     int64
	batchLinger       time.Duration
	retryFor          time.Duration
	retryMin          time.Duration
	retryMax          time.Duration
	stowTimeout       time.Duration
	keepDelivered     time.Duration
}

func serveFlags(c *serveConfig) *pflag.FlagSet {
	fs := pflag.NewFlagSet("dicomgw serve", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&c.listen, "listen", ":11112", "address for DICOM associations (host:port)")
	fs.StringSliceVar(&c.aeTitles, "ae-title", []string{"DICOMGW"}, "AE title(s) the gateway answers to; repeat or separate with commas")
	fs.BoolVar(&c.acceptUnknown, "accept-unknown-sop-classes", false, "also accept private or unknown SOP classes (any well-formed UID) as storage")
	fs.StringVar(&c.spoolDir, "spool-dir", "./var/spool", "durable spool directory, on the slow data disk")
	fs.IntVar(&c.maxAssociations, "max-associations", dimse.DefaultMaxAssociations, "simultaneous associations; more are rejected transient (A-ASSOCIATE-RJ 2/3/2)")
	fs.Uint32Var(&c.maxPDULength, "max-pdu-length", dimse.DefaultMaxPDULength, "maximum PDU length advertised to and accepted from peers (bytes)")
	fs.DurationVar(&c.artimTimeout, "artim-timeout", dimse.DefaultARTIMTimeout, "ARTIM timer: wait for the A-ASSOCIATE-RQ, and for the peer to close after release or abort")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", dimse.DefaultIdleTimeout, "abort an association when nothing arrives for this long")
	fs.DurationVar(&c.writeTimeout, "write-timeout", dimse.DefaultWriteTimeout, "abort an association when a write to the peer takes longer")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, let running associations finish for this long, then abort them")
	fs.StringVar(&c.stowURL, "stow-url", "", "DICOMweb base URL to forward to with STOW-RS (e.g. http://host:8042/dicom-web); empty: file into --archive-dir")
	fs.StringVar(&c.archiveDir, "archive-dir", "./var/archive", "local archive (<study>/<series>/<instance>.dcm) used when --stow-url is empty")
	fs.IntVar(&c.forwardWorkers, "forward-workers", forward.DefaultWorkers, "STOW-RS requests in flight")
	fs.IntVar(&c.batchMaxInstances, "batch-max-instances", forward.DefaultBatchMaxInstances, "objects per STOW-RS request")
	fs.Int64Var(&c.batchMaxBytes, "batch-max-bytes", forward.DefaultBatchMaxBytes, "bytes per STOW-RS request (a larger object goes alone)")
	fs.DurationVar(&c.batchLinger, "batch-linger", forward.DefaultBatchLinger, "how long a new object waits for more of its study before its batch goes")
	fs.DurationVar(&c.retryFor, "retry-for", forward.DefaultRetryFor, "how long an object that fails is retried before it is dead-lettered")
	fs.DurationVar(&c.retryMin, "retry-min", forward.DefaultRetryMin, "first retry delay after a failed delivery (doubles per attempt, with jitter)")
	fs.DurationVar(&c.retryMax, "retry-max", forward.DefaultRetryMax, "longest retry delay")
	fs.DurationVar(&c.stowTimeout, "stow-timeout", 2*time.Minute, "wait for a STOW-RS answer; each request also gets 1 s per MiB of its body")
	fs.DurationVar(&c.keepDelivered, "keep-delivered", 0, "keep delivered objects in the spool's delivered/ for this long (0: delete at once)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	return fs
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
}

func serve(args []string, stdout, stderr io.Writer) int {
	var c serveConfig
	fs := serveFlags(&c)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "dicomgw serve: %v (see dicomgw serve --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dicomgw serve: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "dicomgw serve: %v\n", err)
		return 2
	}
	if err := runServer(c, log); err != nil {
		log.Error("dicomgw stopped", "err", err)
		return 1
	}
	return 0
}

func runServer(c serveConfig, log *slog.Logger) error {
	dcfg := dimse.Config{
		AETitles:                  c.aeTitles,
		AcceptUnknownSOPClasses:   c.acceptUnknown,
		MaxAssociations:           c.maxAssociations,
		MaxPDULength:              c.maxPDULength,
		ARTIMTimeout:              c.artimTimeout,
		IdleTimeout:               c.idleTimeout,
		WriteTimeout:              c.writeTimeout,
		ImplementationClassUID:    dimse.ImplementationClassUID,
		ImplementationVersionName: implementationVersionName(),
	}
	sp, err := spool.Open(spool.Config{
		Dir:                       c.spoolDir,
		ImplementationClassUID:    dcfg.ImplementationClassUID,
		ImplementationVersionName: dcfg.ImplementationVersionName,
		KeepDelivered:             c.keepDelivered > 0,
	}, log.With("component", "spool"))
	if err != nil {
		return err
	}
	defer sp.Close()

	dest, err := destination(c, dcfg, log.With("component", "forward"))
	if err != nil {
		return err
	}
	fwd := forward.New(forward.Config{
		Workers:           c.forwardWorkers,
		BatchMaxInstances: c.batchMaxInstances,
		BatchMaxBytes:     c.batchMaxBytes,
		BatchLinger:       c.batchLinger,
		RetryFor:          c.retryFor,
		RetryMin:          c.retryMin,
		RetryMax:          c.retryMax,
	}, spoolQueue{sp}, dest, log.With("component", "forward"))

	srv, err := dimse.NewServer(dcfg, &storeHandler{spool: sp, notify: fwd.Notify, log: log.With("component", "store")}, log.With("component", "dimse"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	log.Info("dicomgw listening", "addr", ln.Addr().String(), "ae_titles", strings.Join(c.aeTitles, ","),
		"spool_dir", c.spoolDir, "destination", dest.String(), "version", version, "commit", commit)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// The forwarder runs until the receiving side has stopped; then its
	// requests in flight finish or are abandoned, objects staying queued.
	fwdCtx, stopForwarding := context.WithCancel(context.Background())
	forwarding := make(chan struct{})
	go func() {
		defer close(forwarding)
		fwd.Run(fwdCtx)
	}()
	defer func() {
		stopForwarding()
		<-forwarding
	}()
	if c.keepDelivered > 0 {
		go purgeDelivered(fwdCtx, sp.Dir, c.keepDelivered, log.With("component", "spool"))
	}

	select {
	case err := <-served:
		return err
	case sig := <-sigs:
		log.Info("shutting down: no new associations; waiting for running ones", "signal", sig.String(), "timeout", c.shutdownTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	go func() {
		// A second signal: stop waiting. Every acknowledged object is
		// already durable; partial ones are discarded by the aborts.
		select {
		case sig := <-sigs:
			log.Warn("second signal: aborting running associations now", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("associations aborted at shutdown", "err", err)
	}
	if err := <-served; err != nil && !errors.Is(err, dimse.ErrServerClosed) {
		return err
	}
	log.Info("dicomgw stopped")
	return nil
}

// destination is the STOW-RS endpoint, or the local archive when there is
// none.
func destination(c serveConfig, dcfg dimse.Config, log *slog.Logger) (forward.Destination, error) {
	if c.stowURL == "" {
		if c.archiveDir == "" {
			return nil, errors.New("--archive-dir is empty and no --stow-url is given: nowhere to forward to")
		}
		return &forward.Archive{Dir: c.archiveDir}, nil
	}
	return forward.NewSTOW(forward.STOWConfig{
		BaseURL:                   c.stowURL,
		Timeout:                   c.stowTimeout,
		ImplementationClassUID:    dcfg.ImplementationClassUID,
		ImplementationVersionName: dcfg.ImplementationVersionName,
		UserAgent:                 "dicomgw/" + version,
		RetryMax:                  3,
	}, log)
}

// purgeDelivered removes delivered objects once they have been kept long
// enough.
func purgeDelivered(ctx context.Context, d *spool.Dir, keep time.Duration, log *slog.Logger) {
	t := time.NewTicker(min(keep/4+time.Second, 10*time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, bytes, err := d.Purge(spool.StateDelivered, time.Now().Add(-keep))
		if err != nil {
			log.Error("purging delivered objects", "err", err)
		} else if n > 0 {
			log.Info("purged delivered objects", "objects", n, "bytes", bytes, "older_than", keep)
		}
	}
}

// implementationVersionName is sent to peers (PS3.7 D.3.3.2, at most 16
// characters).
func implementationVersionName() string {
	n := "DICOMGW_" + version
	if len(n) > 16 {
		n = n[:16]
	}
	return n
}
