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
	}, log.With("component", "spool"))
	if err != nil {
		return err
	}
	defer sp.Close()

	srv, err := dimse.NewServer(dcfg, &storeHandler{spool: sp, log: log.With("component", "store")}, log.With("component", "dimse"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	log.Info("dicomgw listening", "addr", ln.Addr().String(), "ae_titles", strings.Join(c.aeTitles, ","),
		"spool_dir", c.spoolDir, "version", version, "commit", commit)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

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

// implementationVersionName is sent to peers (PS3.7 D.3.3.2, at most 16
// characters).
func implementationVersionName() string {
	n := "DICOMGW_" + version
	if len(n) > 16 {
		n = n[:16]
	}
	return n
}
