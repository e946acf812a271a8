package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/qr"
)

// dest is one destination, built: what delivers to it, how its forwarder
// is tuned, and its credentials (nil unless STOW-RS with some).
type dest struct {
	name  string
	kind  destKind
	spec  string // its definition, secrets redacted (check-config, logs)
	where string // where it was defined: a flags file line, the command line, or the legacy flags
	to    forward.Destination
	fcfg  forward.Config
	creds forward.Credentials
	// prepare, when set, makes what the destination needs before the
	// gateway starts (the archive's directory).
	prepare func() error
	// key says whether two builds are the same destination (a SIGHUP
	// that keeps it): its full definition, secrets included.
	key string
	// stamps are set on the copy it gets (--stamp).
	stamps []stampSpec
	// qido queries its service root (STOW-RS destinations).
	qido *qr.Client
}

// stowSettings are a STOW-RS destination's TLS and credential settings:
// the --stow-* flags for the default destination, or a destination line's
// options.
type stowSettings struct {
	tokenFile, basicFile                          string
	oauthTokenURL, oauthClientID, oauthSecretFile string
	oauthScopes                                   []string
	caFile, clientCert, clientKey                 string
	insecure                                      bool
	timeout                                       time.Duration
	// name names a setting in an error message: "--stow-ca-file" for the
	// flags, "destination X: ca-file" for a destination line.
	name func(key string) string
}

// legacySTOW is the default destination's settings, from the --stow-*
// flags.
func (c serveConfig) legacySTOW() stowSettings {
	return stowSettings{
		tokenFile: c.stowTokenFile, basicFile: c.stowBasicFile,
		oauthTokenURL: c.oauthTokenURL, oauthClientID: c.oauthClientID, oauthSecretFile: c.oauthSecretFile, oauthScopes: c.oauthScopes,
		caFile: c.stowCAFile, clientCert: c.stowClientCert, clientKey: c.stowClientKey, insecure: c.stowInsecure,
		timeout: c.stowTimeout,
		name:    func(k string) string { return "--stow-" + k },
	}
}

// credentials builds the credentials the settings ask for (one kind at
// most); nil when none.
func (s stowSettings) credentials(client *http.Client) (forward.Credentials, error) {
	var set []string
	if s.tokenFile != "" {
		set = append(set, s.name("token-file"))
	}
	if s.basicFile != "" {
		set = append(set, s.name("basic-auth-file"))
	}
	if s.oauthTokenURL != "" {
		set = append(set, s.name("oauth2-token-url"))
	}
	switch {
	case len(set) > 1:
		return nil, fmt.Errorf("one kind of STOW-RS credentials at a time, not %s", strings.Join(set, " and "))
	case s.tokenFile != "":
		return forward.NewTokenFile(s.tokenFile)
	case s.basicFile != "":
		return forward.NewBasicFile(s.basicFile)
	case s.oauthTokenURL != "":
		return forward.NewOAuth2(forward.OAuth2Config{TokenURL: s.oauthTokenURL, ClientID: s.oauthClientID,
			ClientSecretFile: s.oauthSecretFile, Scopes: s.oauthScopes, HTTPClient: client})
	}
	return nil, nil
}

// tlsConfig is the TLS configuration towards the endpoint: verified
// against the system's roots plus the CA file, with a client certificate
// if given. Turning verification off is allowed only loudly.
func (s stowSettings) tlsConfig(log *slog.Logger) (*tls.Config, error) {
	cfg, err := clientTLS(s.caFile, s.clientCert, s.clientKey, s.name)
	if err != nil {
		return nil, err
	}
	if s.insecure {
		cfg.InsecureSkipVerify = true
		log.Warn("TLS VERIFICATION OF A STOW-RS ENDPOINT IS DISABLED (" + s.name("insecure-skip-verify") + "): " +
			"anyone on the network path can read and alter what is forwarded, credentials included. Use " + s.name("ca-file") + " instead.")
	}
	return cfg, nil
}

// clientTLS is a TLS client configuration: the system's roots plus
// caFile, a client certificate when cert and key are given.
func clientTLS(caFile, cert, key string, name func(string) string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := certPool(caFile, true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name("ca-file"), err)
		}
		cfg.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%s and %s go together", name("client-cert"), name("client-key"))
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", name("client-cert"), name("client-key"), err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// newSTOW builds a STOW-RS destination.
func newSTOW(base string, s stowSettings, dcfg dimse.Config, log *slog.Logger) (forward.Destination, forward.Credentials, *qr.Client, error) {
	tlsCfg, err := s.tlsConfig(log)
	if err != nil {
		return nil, nil, nil, err
	}
	// The token endpoint gets the same trust as the DICOMweb endpoint.
	tokenClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	creds, err := s.credentials(tokenClient)
	if err != nil {
		return nil, nil, nil, err
	}
	to, err := forward.NewSTOW(forward.STOWConfig{
		BaseURL:                   base,
		Timeout:                   s.timeout,
		ImplementationClassUID:    dcfg.ImplementationClassUID,
		ImplementationVersionName: dcfg.ImplementationVersionName,
		UserAgent:                 "dicomgw/" + version,
		RetryMax:                  3,
		TLS:                       tlsCfg,
		Credentials:               creds,
	}, log)
	if err != nil {
		return nil, nil, nil, err
	}
	// The same service root answers QIDO-RS (--qr-destination), with the
	// same trust and credentials.
	u, err := url.Parse(base)
	if err != nil {
		return nil, nil, nil, err
	}
	timeout := s.timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	qc := &qr.Client{Base: u, PageSize: 100, Timeout: timeout, UserAgent: "dicomgw/" + version,
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if creds != nil {
		qc.Auth = creds
	}
	return to, creds, qc, nil
}

// newArchive builds an archive destination.
func newArchive(dir string, dcfg dimse.Config) *forward.Archive {
	return &forward.Archive{Dir: dir, ImplementationClassUID: dcfg.ImplementationClassUID, ImplementationVersionName: dcfg.ImplementationVersionName}
}

// forwardConfig is the forwarder's tuning from the global flags, which a
// destination line's options override.
func (c serveConfig) forwardConfig() forward.Config {
	return forward.Config{
		Workers:           c.forwardWorkers,
		BatchMaxInstances: c.batchMaxInstances,
		BatchMaxBytes:     c.batchMaxBytes,
		BatchLinger:       c.batchLinger,
		RetryFor:          c.retryFor,
		RetryMin:          c.retryMin,
		RetryMax:          c.retryMax,
	}
}

// destinations builds every destination: the default one from the legacy
// flags (--stow-url, or the archive at --archive-dir) unless a
// --destination line defines "default", then each --destination line.
// With --destination lines, the archive is "default" only when
// --archive-dir is given: its default value alone does not make an
// archive nobody asked for.
func (c serveConfig) destinations(dcfg dimse.Config, log *slog.Logger) (map[string]*dest, error) {
	out := map[string]*dest{}
	defined := slices.ContainsFunc(c.destinationSpecs.specs, func(d destSpec) bool { return d.Name == defaultDestination })
	legacy := c.stowURL != "" || c.archiveDirSet || len(c.destinationSpecs.specs) == 0
	if !defined && legacy {
		d, err := c.legacyDestination(dcfg, log)
		if err != nil {
			return nil, err
		}
		out[d.name] = d
	} else if c.stowURL != "" {
		return nil, errors.New("--stow-url describes the destination \"default\", and a --destination line defines one too: keep one")
	}
	for _, spec := range c.destinationSpecs.specs {
		d, err := c.buildDestination(spec, dcfg, log)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Origin, err)
		}
		out[d.name] = d
	}
	return out, nil
}

// legacyDestination is "default" from --stow-url and the --stow-* flags,
// or the archive at --archive-dir when there is no --stow-url.
func (c serveConfig) legacyDestination(dcfg dimse.Config, log *slog.Logger) (*dest, error) {
	d := &dest{name: defaultDestination, fcfg: c.forwardConfig(), where: "--stow-url/--archive-dir"}
	if c.stowURL == "" {
		if c.archiveDir == "" {
			return nil, errors.New("--archive-dir is empty and no --stow-url is given: nowhere to forward to")
		}
		a := newArchive(c.archiveDir, dcfg)
		d.kind, d.to, d.prepare = kindArchive, a, a.Prepare
		d.spec = "default=file://" + filepath.ToSlash(c.archiveDir)
		d.key = d.spec
		return d, nil
	}
	s := c.legacySTOW()
	to, creds, qc, err := newSTOW(c.stowURL, s, dcfg, log)
	if err != nil {
		return nil, err
	}
	d.kind, d.to, d.creds, d.qido = kindSTOW, to, creds, qc
	d.spec = "default=" + to.String()
	d.key = fmt.Sprintf("default=%s %+v", c.stowURL, s)
	return d, nil
}

// buildDestination builds a --destination line's destination.
func (c serveConfig) buildDestination(spec destSpec, dcfg dimse.Config, log *slog.Logger) (*dest, error) {
	d := &dest{name: spec.Name, kind: spec.Kind, spec: spec.redacted(), where: spec.Origin, key: spec.key()}
	name := func(k string) string { return "destination " + spec.Name + ": " + k }
	opt := spec.Opts
	var err error
	if d.fcfg, err = c.destForwardConfig(spec, name); err != nil {
		return nil, err
	}
	duration := func(k string, def time.Duration) (time.Duration, error) {
		v, ok := opt[k]
		if !ok {
			return def, nil
		}
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			return 0, fmt.Errorf("%s: %q is not a positive duration", name(k), v)
		}
		return t, nil
	}
	switch spec.Kind {
	case kindSTOW:
		s := stowSettings{
			tokenFile: opt["token-file"], basicFile: opt["basic-auth-file"],
			oauthTokenURL: opt["oauth2-token-url"], oauthClientID: opt["oauth2-client-id"], oauthSecretFile: opt["oauth2-client-secret-file"],
			caFile: opt["ca-file"], clientCert: opt["client-cert"], clientKey: opt["client-key"], name: name,
		}
		if v := opt["oauth2-scopes"]; v != "" {
			s.oauthScopes = strings.Split(v, ",")
		}
		if v, ok := opt["insecure-skip-verify"]; ok {
			if s.insecure, err = strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("%s: %q is not true or false", name("insecure-skip-verify"), v)
			}
		}
		if s.timeout, err = duration("timeout", c.stowTimeout); err != nil {
			return nil, err
		}
		u := *spec.URL
		if d.to, d.creds, d.qido, err = newSTOW(u.String(), s, dcfg, log); err != nil {
			return nil, err
		}
	case kindDICOM:
		cc := forward.CStoreConfig{
			Addr:      net.JoinHostPort(spec.URL.Hostname(), spec.URL.Port()),
			CalledAE:  spec.URL.User.Username(),
			CallingAE: firstAETitle(dcfg),
		}
		switch v := opt["calling-ae"]; v {
		case "", "ours":
		case "original":
			cc.OriginalCallingAE = true
		default:
			if err := dimse.ValidAETitle(v); err != nil {
				return nil, fmt.Errorf("%s: %q is neither ours, original nor an AE title: %v", name("calling-ae"), v, err)
			}
			cc.CallingAE = v
		}
		if cc.Timeout, err = duration("timeout", forward.DefaultCStoreTimeout); err != nil {
			return nil, err
		}
		if spec.URL.Scheme == "dicoms" {
			if cc.TLS, err = clientTLS(opt["ca-file"], opt["client-cert"], opt["client-key"], name); err != nil {
				return nil, err
			}
		} else if opt["ca-file"]+opt["client-cert"]+opt["client-key"] != "" {
			return nil, fmt.Errorf("destination %s: ca-file, client-cert and client-key are for dicoms://", spec.Name)
		}
		if d.to, err = forward.NewCStore(cc, log); err != nil {
			return nil, fmt.Errorf("destination %s: %w", spec.Name, err)
		}
	case kindArchive:
		a := newArchive(filepath.FromSlash(spec.URL.Path), dcfg)
		d.to, d.prepare = a, a.Prepare
	}
	return d, nil
}

// firstAETitle is the calling AE title a C-STORE destination uses by
// default: the gateway's own (its first --ae-title).
func firstAETitle(dcfg dimse.Config) string {
	if len(dcfg.AETitles) > 0 {
		return dcfg.AETitles[0]
	}
	return "DICOMGW"
}

// destForwardConfig is the global tuning with a destination line's
// options over it.
func (c serveConfig) destForwardConfig(spec destSpec, name func(string) string) (forward.Config, error) {
	fc := c.forwardConfig()
	ints := map[string]*int{"workers": &fc.Workers, "batch-max-instances": &fc.BatchMaxInstances}
	durs := map[string]*time.Duration{"batch-linger": &fc.BatchLinger, "retry-for": &fc.RetryFor, "retry-min": &fc.RetryMin, "retry-max": &fc.RetryMax}
	keys := make([]string, 0, len(spec.Opts))
	for k := range spec.Opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := spec.Opts[k]
		switch {
		case ints[k] != nil:
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fc, fmt.Errorf("%s: %q is not a positive number", name(k), v)
			}
			*ints[k] = n
		case durs[k] != nil:
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 {
				return fc, fmt.Errorf("%s: %q is not a positive duration", name(k), v)
			}
			*durs[k] = t
		case k == "batch-max-bytes":
			var b byteSize
			if err := b.Set(v); err != nil || b <= 0 {
				return fc, fmt.Errorf("%s: %q is not a positive size", name(k), v)
			}
			fc.BatchMaxBytes = int64(b)
		}
	}
	if fc.RetryMin > fc.RetryMax && fc.RetryMax > 0 {
		return fc, fmt.Errorf("%s (%v) is longer than %s (%v)", name("retry-min"), fc.RetryMin, name("retry-max"), fc.RetryMax)
	}
	return fc, nil
}

// key is a destination line's full definition, secrets included: two
// lines with the same key are the same destination.
func (d destSpec) key() string {
	keys := make([]string, 0, len(d.Opts))
	for k := range d.Opts {
		keys = append(keys, k+"="+d.Opts[k])
	}
	sort.Strings(keys)
	return d.Name + "=" + d.URL.String() + " " + strings.Join(keys, " ")
}
