package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/auth"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/route"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// serveConfig is everything `dicomgw serve` is told by its flags and flags
// files.
type serveConfig struct {
	flagfiles       []string
	listen          string
	aeTitles        []string
	callingAEs      []string
	acceptUnknown   bool
	uidPolicy       string
	spoolDir        string
	maxAssociations int
	maxPDULength    uint32
	artimTimeout    time.Duration
	idleTimeout     time.Duration
	writeTimeout    time.Duration
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string
	metricsListen   string
	spoolMaxBytes   byteSize
	spoolMinFree    byteSize
	maxObjectSize   byteSize
	maxPerHost      int
	maxConnections  int
	maxConnsPerHost int
	pduTimeout      time.Duration

	// Security.
	tlsListen       string
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	usersFile       string
	jwtIssuer       string
	jwtAudience     string
	jwtJWKSFile     string
	jwtAlgorithms   []string
	requireIdentity bool
	stowTokenFile   string
	stowBasicFile   string
	oauthTokenURL   string
	oauthClientID   string
	oauthSecretFile string
	oauthScopes     []string
	stowCAFile      string
	stowClientCert  string
	stowClientKey   string
	stowInsecure    bool

	// Forwarding.
	stowURL           string
	archiveDir        string
	archiveDirSet     bool // --archive-dir given, not its default
	forwardWorkers    int
	batchMaxInstances int
	batchMaxBytes     int64
	batchLinger       time.Duration
	retryFor          time.Duration
	retryMin          time.Duration
	retryMax          time.Duration
	stowTimeout       time.Duration
	keepDelivered     time.Duration

	// Routing.
	destinationSpecs destFlags
	routes           routeFlags
	stamps           stampFlags
	qrDestination    string
	qrPageSize       int
	unrouted         string
	ledgerRetention  time.Duration

	// Storage commitment.
	commitment        string
	commitmentTimeout time.Duration
	remoteAEs         remoteAEFlags

	// Operator console.
	consoleListen         string
	consoleUsersFile      string
	consoleTLSCert        string
	consoleTLSKey         string
	consoleSessionTimeout time.Duration
	consoleProxies        []string
}

// liveFlags are applied on SIGHUP to new associations; every other flag
// takes effect at the next start. (The files they name are re-read on
// SIGHUP too: a renewed certificate, an edited users file.)
var liveFlags = map[string]bool{
	"ae-title": true, "calling-ae": true, "destination": true, "route": true, "unrouted": true, "remote-ae": true, "stamp": true,
	"tls-cert": true, "tls-key": true, "tls-client-ca": true,
	"console-users-file": true, "console-tls-cert": true, "console-tls-key": true,
	"users-file": true, "jwt-issuer": true, "jwt-audience": true, "jwt-jwks-file": true, "jwt-algorithms": true,
}

func serveFlags(c *serveConfig) *pflag.FlagSet {
	fs := pflag.NewFlagSet("dicomgw serve", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringArrayVar(&c.flagfiles, "flagfile", nil, "read flags from this file, one per line (repeatable); command-line flags win")
	fs.StringVar(&c.listen, "listen", ":11112", "address for DICOM associations in plaintext (host:port; empty: none)")
	fs.StringVar(&c.tlsListen, "tls-listen", "", "address for DICOM TLS associations (conventionally :2762; empty: none)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) of the DICOM TLS port (re-read on SIGHUP)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of the DICOM TLS port (re-read on SIGHUP)")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "PEM CA certificates: when set, the TLS port requires client certificates they sign (mutual TLS)")
	fs.StringVar(&c.usersFile, "users-file", "", "user identities (sub-item 58, type 2): username:bcrypt-hash lines; passcodes accepted over TLS only (re-read on SIGHUP)")
	fs.StringVar(&c.jwtJWKSFile, "jwt-jwks-file", "", "user identities as JSON Web Tokens (type 5): the issuer's public keys (JWK Set); tokens accepted over TLS only")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "the iss a JSON Web Token must carry")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "the aud a JSON Web Token must carry")
	fs.StringSliceVar(&c.jwtAlgorithms, "jwt-algorithms", []string{"RS256", "PS256", "ES256", "EdDSA"}, "signing algorithms a JSON Web Token may use")
	fs.BoolVar(&c.requireIdentity, "require-user-identity", false, "refuse associations without a user identity that checks out (A-ASSOCIATE-RJ 1/1/1)")
	fs.StringSliceVar(&c.aeTitles, "ae-title", []string{"DICOMGW"}, "AE title(s) the gateway answers to; repeat or separate with commas (live on SIGHUP)")
	fs.StringSliceVar(&c.callingAEs, "calling-ae", nil, "who may send: AE, AE@host, AE@cidr or AE@cn=SUBJECT (TLS client certificate); repeat or separate with commas; none: anyone (live on SIGHUP)")
	fs.BoolVar(&c.acceptUnknown, "accept-unknown-sop-classes", false, "also accept private or unknown SOP classes (any well-formed UID) as storage")
	fs.StringVar(&c.uidPolicy, "uid-policy", "lenient", "UIDs a C-STORE may carry: lenient also accepts what breaks PS3.5 9.1 but is 1-64 bytes of [0-9A-Za-z._-] (hexadecimal, leading zeros, empty components), counted and logged; strict refuses it with C000")
	fs.StringVar(&c.spoolDir, "spool-dir", "./var/spool", "durable spool directory, on the slow data disk")
	fs.IntVar(&c.maxAssociations, "max-associations", dimse.DefaultMaxAssociations, "simultaneous associations; more are rejected transient (A-ASSOCIATE-RJ 2/3/2)")
	fs.IntVar(&c.maxPerHost, "max-associations-per-host", 0, "simultaneous associations from one peer address (0: only --max-associations); more are rejected transient (2/3/2)")
	fs.IntVar(&c.maxConnections, "max-connections", 0, "open TCP connections of any kind; beyond, a new one is closed at once (0: 4 x --max-associations + 64)")
	fs.IntVar(&c.maxConnsPerHost, "max-connections-per-host", 0, "open TCP connections from one peer address; beyond, its new ones are closed at once, so that one host cannot take every connection (0: a quarter of --max-connections, at least --max-associations + 16: more than a busy PACS or a Kubernetes probe ever opens, at most half of --max-connections; set, it must be less than --max-connections; senders behind one NAT or proxy address share it)")
	fs.Uint32Var(&c.maxPDULength, "max-pdu-length", dimse.DefaultMaxPDULength, "maximum PDU length advertised to and accepted from peers (bytes)")
	fs.DurationVar(&c.artimTimeout, "artim-timeout", dimse.DefaultARTIMTimeout, "ARTIM timer: wait for the A-ASSOCIATE-RQ, and for the peer to close after release or abort")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", dimse.DefaultIdleTimeout, "abort an association when nothing arrives for this long")
	fs.DurationVar(&c.pduTimeout, "pdu-timeout", dimse.DefaultPDUTimeout, "abort an association when a PDU, once begun, takes longer than this to arrive (slow senders, slowloris)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", dimse.DefaultWriteTimeout, "abort an association when a write to the peer takes longer")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, let running associations finish for this long, then abort them")
	fs.StringVar(&c.stowURL, "stow-url", "", "DICOMweb base URL to forward to with STOW-RS (e.g. http://host:8042/dicom-web); empty: file into --archive-dir")
	fs.StringVar(&c.archiveDir, "archive-dir", "./var/archive", "local archive (<study>/<series>/<instance>.dcm), the destination \"default\" when --stow-url is empty and either no --destination line is given or this flag is")
	fs.StringVar(&c.stowTokenFile, "stow-token-file", "", "bearer token for the endpoint (a KHEOPS album token...), re-read whenever the file changes")
	fs.StringVar(&c.stowBasicFile, "stow-basic-auth-file", "", "HTTP Basic credentials for the endpoint, as user:password in a file")
	fs.StringVar(&c.oauthTokenURL, "stow-oauth2-token-url", "", "OAuth2 token endpoint (client credentials grant, e.g. Keycloak) for the endpoint's access tokens")
	fs.StringVar(&c.oauthClientID, "stow-oauth2-client-id", "", "OAuth2 client ID")
	fs.StringVar(&c.oauthSecretFile, "stow-oauth2-client-secret-file", "", "file holding the OAuth2 client secret (re-read when it changes)")
	fs.StringSliceVar(&c.oauthScopes, "stow-oauth2-scopes", nil, "OAuth2 scopes to ask for")
	fs.StringVar(&c.stowCAFile, "stow-ca-file", "", "PEM CA certificates trusted for the endpoint, besides the system's (a private CA)")
	fs.StringVar(&c.stowClientCert, "stow-client-cert", "", "PEM client certificate for the endpoint (mutual TLS)")
	fs.StringVar(&c.stowClientKey, "stow-client-key", "", "PEM private key of --stow-client-cert")
	fs.BoolVar(&c.stowInsecure, "stow-insecure-skip-verify", false, "DO NOT VERIFY the endpoint's certificate (logged loudly; for tests only)")
	fs.IntVar(&c.forwardWorkers, "forward-workers", forward.DefaultWorkers, "STOW-RS requests in flight")
	fs.IntVar(&c.batchMaxInstances, "batch-max-instances", forward.DefaultBatchMaxInstances, "objects per STOW-RS request")
	fs.Int64Var(&c.batchMaxBytes, "batch-max-bytes", forward.DefaultBatchMaxBytes, "bytes per STOW-RS request (a larger object goes alone)")
	fs.DurationVar(&c.batchLinger, "batch-linger", forward.DefaultBatchLinger, "how long a new object waits for more of its study before its batch goes")
	fs.DurationVar(&c.retryFor, "retry-for", forward.DefaultRetryFor, "how long an object that fails is retried before it is dead-lettered")
	fs.DurationVar(&c.retryMin, "retry-min", forward.DefaultRetryMin, "first retry delay after a failed delivery (doubles per attempt, with jitter)")
	fs.DurationVar(&c.retryMax, "retry-max", forward.DefaultRetryMax, "longest retry delay")
	fs.DurationVar(&c.stowTimeout, "stow-timeout", 2*time.Minute, "wait for a STOW-RS answer; each request also gets 1 s per MiB of its body")
	fs.Var(&c.destinationSpecs, "destination", "a named destination: NAME=URL [key=value ...] with URL http(s)://... (STOW-RS), dicom://CALLED_AE@HOST:PORT or dicoms:// (C-STORE), file:///DIR (archive); repeatable (README: Routing). --stow-url, or --archive-dir without it, is the destination \"default\" (live on SIGHUP)")
	fs.Var(&c.routes, "route", "route objects to destinations: 'MATCHERS -> DEST[,DEST...]' with Prometheus label matchers on called_ae, calling_ae, peer and DICOM keywords of the header, e.g. '{called_ae=~\"KP-.+\", Modality!=\"SR\"} -> research'; every matching route applies; repeatable; none: everything to \"default\" (live on SIGHUP)")
	fs.StringVar(&c.qrDestination, "qr-destination", "", "answer C-FIND (Patient and Study Root) from the QIDO-RS of this STOW-RS destination's service root, with its credentials and TLS (\"default\" with --stow-url); empty: query/retrieve is not offered")
	fs.IntVar(&c.qrPageSize, "qr-page-size", 100, "results asked for per QIDO-RS request (limit); a C-FIND pages through them all, whatever the server's own cap")
	fs.Var(&c.stamps, "stamp", "set an attribute on the copy one destination gets: DEST=Keyword=VALUE, VALUE may use {calling_ae}, {called_ae} and {received_date}, e.g. 'research=ClinicalTrialSponsorName={called_ae}'; text attributes only; repeatable; the spool and other destinations keep the original (README: Stamping)")
	fs.StringVar(&c.unrouted, "unrouted", "refuse", "an object no route matches: refuse (the sender gets 0124, not authorized, before anything is stored) or the name of a destination to send it to")
	fs.DurationVar(&c.ledgerRetention, "ledger-retention", 30*24*time.Hour, "how long the delivery ledger remembers an object after its file has left the spool (spool trace, storage commitment)")
	fs.StringVar(&c.commitment, "commitment", "delivered", "what a storage commitment (N-ACTION, Storage Commitment Push Model) commits to: delivered (every referenced instance confirmed by every destination it was routed to), received (durable in the spool), or off (the SOP class is not accepted)")
	fs.DurationVar(&c.commitmentTimeout, "commitment-timeout", 24*time.Hour, "a storage commitment request reports the instances not delivered (or received) by then as failures (0110)")
	fs.Var(&c.remoteAEs, "remote-ae", "how to reach an AE title for the storage commitment report when it does not wait on its own association: AET=HOST:PORT [tls=true ca-file=F client-cert=F client-key=F timeout=D]; repeatable; a commitment request from an AE title not listed is refused (live on SIGHUP)")
	fs.DurationVar(&c.keepDelivered, "keep-delivered", 0, "keep delivered objects in the spool's delivered/ for this long (0: delete at once)")
	fs.StringVar(&c.metricsListen, "metrics-listen", ":9477", "address for /metrics, /healthz and /readyz (empty: none)")
	fs.StringVar(&c.consoleListen, "console-listen", "", "address of the operator console, a web page (e.g. :9480; empty: none); needs --console-users-file")
	fs.StringVar(&c.consoleUsersFile, "console-users-file", "", "who may log in to the console: username:bcrypt-hash lines, as `htpasswd -nbB USER PASSWORD` writes them (re-read on SIGHUP)")
	fs.StringVar(&c.consoleTLSCert, "console-tls-cert", "", "PEM certificate (chain): the console is served over HTTPS (re-read on SIGHUP)")
	fs.StringVar(&c.consoleTLSKey, "console-tls-key", "", "PEM private key of --console-tls-cert (re-read on SIGHUP)")
	fs.StringSliceVar(&c.consoleProxies, "console-trusted-proxies", nil, "reverse proxies in front of the console (an Ingress controller), as addresses or CIDRs: the client address and scheme they forward (X-Forwarded-For, X-Forwarded-Proto) are believed from them only; none: the peer is the client")
	fs.DurationVar(&c.consoleSessionTimeout, "console-session-timeout", 30*time.Minute, "a console session ends after this long without a page asked for (and 12 h after its login in any case)")
	c.spoolMinFree = 1 << 30
	fs.Var(&c.spoolMaxBytes, "spool-max-bytes", "the most the spool may hold (e.g. 500GiB; 0: no limit); at this high-water mark new associations get A-ASSOCIATE-RJ 2/3/1 and C-STOREs A700 until it drains to 90%")
	fs.Var(&c.spoolMinFree, "spool-min-free", "free space to leave on the spool's file system (e.g. 10GiB); below it, as for --spool-max-bytes, until 1/0.9 of it is free again")
	fs.Var(&c.maxObjectSize, "max-object-size", "refuse larger objects with A700, as soon as they pass it (e.g. 4GiB; 0: no limit)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	return fs
}

// errUsage marks errors in how the command was called (exit status 2).
var errUsage = errors.New("usage")

// loadConfig reads the command line, then the flags files it names, and
// returns the configuration with the flag set that holds it.
func loadConfig(name string, args []string, out io.Writer) (serveConfig, *pflag.FlagSet, error) {
	var c serveConfig
	fs := serveFlags(&c)
	fs.Init(name, pflag.ContinueOnError)
	fs.SetOutput(out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return c, fs, err
		}
		return c, fs, fmt.Errorf("%w: %v (see %s --help)", errUsage, err, name)
	}
	if fs.NArg() > 0 {
		return c, fs, fmt.Errorf("%w: unexpected arguments: %s", errUsage, strings.Join(fs.Args(), " "))
	}
	if err := applyFlagFiles(fs, c.flagfiles); err != nil {
		return c, fs, err
	}
	c.archiveDirSet = fs.Changed("archive-dir")
	return c, fs, nil
}

// settings is a checked configuration: what the gateway is built from.
type settings struct {
	dimse    dimse.Config
	policy   dimse.Policy
	dests    map[string]*dest // by name
	table    *route.Table
	unrouted string              // "": refuse; else a destination's name
	remotes  map[string]remoteAE // --remote-ae, by AE title
	tls      *tls.Config         // the DICOM TLS port's; nil without one
	auth     *auth.Authenticator // nil when user identities are not checked
	// The console's users and HTTPS configuration (nil: no console, plain
	// HTTP).
	consoleUsers   *auth.Authenticator
	consoleTLS     *tls.Config
	consoleProxies []netip.Prefix
}

// check turns a configuration into settings, or says what is wrong with
// it, without starting anything.
func (c serveConfig) check(log *slog.Logger) (*settings, error) {
	if _, err := newLogger(io.Discard, c.logLevel, c.logFormat); err != nil {
		return nil, err
	}
	pol, err := c.policy()
	if err != nil {
		return nil, err
	}
	uidPolicy, err := uid.ParsePolicy(c.uidPolicy)
	if err != nil {
		return nil, fmt.Errorf("--uid-policy: %w", err)
	}
	s := &settings{policy: pol}
	s.dimse = dimse.Config{
		UIDPolicy:                 uidPolicy,
		AETitles:                  pol.AETitles,
		CallingAEs:                pol.CallingAEs,
		AcceptUnknownSOPClasses:   c.acceptUnknown,
		MaxAssociations:           c.maxAssociations,
		MaxAssociationsPerHost:    c.maxPerHost,
		MaxConnections:            c.maxConnections,
		MaxConnectionsPerHost:     c.maxConnsPerHost,
		MaxPDULength:              c.maxPDULength,
		ARTIMTimeout:              c.artimTimeout,
		IdleTimeout:               c.idleTimeout,
		PDUTimeout:                c.pduTimeout,
		WriteTimeout:              c.writeTimeout,
		ImplementationClassUID:    dimse.ImplementationClassUID,
		ImplementationVersionName: implementationVersionName(),
	}
	if err := dimse.CheckConfig(s.dimse); err != nil {
		return nil, err
	}
	if c.spoolDir == "" {
		return nil, errors.New("--spool-dir is empty")
	}
	if c.listen == "" && c.tlsListen == "" {
		return nil, errors.New("neither --listen nor --tls-listen: nowhere to receive")
	}
	if c.tlsListen != "" {
		if s.tls, err = serverTLS(c.tlsCert, c.tlsKey, c.tlsClientCA); err != nil {
			return nil, err
		}
	}
	if ac := c.authConfig(); ac != nil {
		if s.auth, err = auth.New(*ac); err != nil {
			return nil, err
		}
	} else if c.requireIdentity {
		return nil, errors.New("--require-user-identity needs --users-file or --jwt-jwks-file")
	}
	if s.dests, s.table, s.unrouted, err = c.routing(s.dimse, log); err != nil {
		return nil, err
	}
	s.policy.CalledAE = s.table.AcceptsCalledAE
	switch c.commitment {
	case "delivered", "received", "off":
	default:
		return nil, fmt.Errorf("--commitment=%s: want delivered, received or off", c.commitment)
	}
	if c.commitmentTimeout <= 0 {
		return nil, fmt.Errorf("--commitment-timeout=%v: want a positive duration", c.commitmentTimeout)
	}
	if c.qrPageSize < 1 || c.qrPageSize > 10000 {
		return nil, fmt.Errorf("--qr-page-size=%d: want 1 to 10000", c.qrPageSize)
	}
	if c.qrDestination != "" {
		d := s.dests[c.qrDestination]
		switch {
		case d == nil:
			return nil, fmt.Errorf("--qr-destination=%s: no such destination", c.qrDestination)
		case d.qido == nil:
			return nil, fmt.Errorf("--qr-destination=%s: a %s destination; queries need a DICOMweb (STOW-RS) one, whose service root answers QIDO-RS", c.qrDestination, d.kind)
		}
	}
	if s.remotes, err = c.remoteAEs.remoteAEs(); err != nil {
		return nil, err
	}
	if s.consoleUsers, s.consoleTLS, err = c.consoleChecks(); err != nil {
		return nil, err
	}
	if s.consoleProxies, err = parseProxies(c.consoleProxies); err != nil {
		return nil, err
	}
	return s, nil
}

// routing builds the destinations and the routing table, and checks that
// every destination a route or --unrouted names exists.
func (c serveConfig) routing(dcfg dimse.Config, log *slog.Logger) (map[string]*dest, *route.Table, string, error) {
	dests, err := c.destinations(dcfg, log)
	if err != nil {
		return nil, nil, "", err
	}
	if err := c.stamps.attach(dests); err != nil {
		return nil, nil, "", err
	}
	table, err := c.routes.table(dests)
	if err != nil {
		return nil, nil, "", err
	}
	unrouted := ""
	if c.unrouted != "refuse" {
		if dests[c.unrouted] == nil {
			return nil, nil, "", fmt.Errorf("--unrouted=%s: no such destination (refuse, or a destination's name)", c.unrouted)
		}
		unrouted = c.unrouted
	}
	if c.ledgerRetention <= 0 {
		return nil, nil, "", errors.New("--ledger-retention must be positive")
	}
	return dests, table, unrouted, nil
}

// policy reads the AE titles and the calling AE allowlist.
func (c serveConfig) policy() (dimse.Policy, error) {
	p := dimse.Policy{AETitles: c.aeTitles}
	for _, spec := range c.callingAEs {
		e, err := dimse.ParseCallingAE(context.Background(), spec)
		if err != nil {
			return p, fmt.Errorf("--calling-ae: %w", err)
		}
		p.CallingAEs = append(p.CallingAEs, e)
	}
	return p, nil
}

// flagValues maps each flag to its value, to compare two configurations.
func flagValues(fs *pflag.FlagSet) map[string]string {
	m := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) { m[f.Name] = f.Value.String() })
	return m
}

func serve(args []string, stdout, stderr io.Writer) int {
	c, fs, err := loadConfig("dicomgw serve", args, stderr)
	if err != nil {
		return configExit(stderr, "serve", err)
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "dicomgw serve: %v\n", err)
		return 2
	}
	if err := runServer(c, fs, args, log); err != nil {
		log.Error("dicomgw stopped", "err", err)
		return 1
	}
	return 0
}

// configExit reports a configuration error: 0 for --help, 2 for a bad
// command line, 1 for a bad flags file or setting.
func configExit(stderr io.Writer, cmd string, err error) int {
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "dicomgw %s: %v\n", cmd, err)
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// checkConfig is `dicomgw check-config`: it reads the flags (files
// included) as serve would, checks them, and prints the effective settings.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	c, fs, err := loadConfig("dicomgw check-config", args, stderr)
	var set *settings
	if err == nil {
		set, err = c.check(slog.New(slog.DiscardHandler))
	}
	if err != nil {
		return configExit(stderr, "check-config", err)
	}
	fmt.Fprintln(stdout, "configuration OK")
	printRouting(stdout, set)
	fmt.Fprintln(stdout, "effective settings:")
	for _, f := range effectiveFlags(fs) {
		if f.None {
			fmt.Fprintf(stdout, "  # --%s: none\n", f.Name)
			continue
		}
		fmt.Fprintf(stdout, "  --%s=%s\n", f.Name, f.Value)
	}
	return 0
}

// printRouting says where objects go: each destination with its kind and
// where it was defined, each route in its canonical form, what happens to
// an object no route matches, and the destinations no route names.
func printRouting(w io.Writer, set *settings) {
	names := make([]string, 0, len(set.dests))
	for n := range set.dests {
		names = append(names, n)
	}
	sort.Strings(names)
	used := map[string]bool{set.unrouted: true}
	for _, r := range set.table.Routes() {
		for _, d := range r.Destinations() {
			used[d] = true
		}
	}
	fmt.Fprintln(w, "destinations:")
	for _, n := range names {
		d := set.dests[n]
		note := ""
		if !used[n] {
			note = "  # no route sends anything here"
		}
		fmt.Fprintf(w, "  %s (%s, from %s): %s%s\n", n, d.kind, d.where, d.spec, note)
	}
	fmt.Fprintln(w, "routes (every matching route applies):")
	for _, r := range set.table.Routes() {
		fmt.Fprintf(w, "  %s\n", r.String())
	}
	if set.unrouted == "" {
		fmt.Fprintln(w, "an object no route matches: refused (0124) before it is stored")
	} else {
		fmt.Fprintf(w, "an object no route matches: sent to %s\n", set.unrouted)
	}
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
