package schema

// The grammars every user-supplied value is checked against. Each says where
// it comes from. Most are stricter than their source: a value that reaches an
// nginx file must not be able to end a directive or a quoted string, start a
// comment or a block, or name an nginx variable we did not choose to allow
// (DESIGN.md, "Safety rules that never bend"). The nginx package still
// quotes everything; these grammars are the first line, not the only one.

import (
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// nameRe is a lowercase RFC 1123 label, as Kubernetes uses for object names
// (k8s.io/apimachinery validation.IsDNS1123Label); at most 63 bytes.
var nameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// nameError checks a resource name; "" means valid.
func nameError(s string) string {
	if s == "" {
		return "required"
	}
	if len(s) > 63 || !nameRe.MatchString(s) {
		return quote(s) + " is not a valid name; use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

// labelNameRe is the name part of a Kubernetes label key and the whole of a
// label value (k8s.io/apimachinery validation.IsQualifiedName and
// IsValidLabelValue); at most 63 bytes.
var labelNameRe = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// labelKeyError checks a label key: an optional DNS subdomain prefix and "/",
// then a name (Kubernetes label key grammar); "" means valid.
func labelKeyError(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = k
	}
	const want = "; a label key is an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	if hasPrefix && (prefix == "" || len(prefix) > 253 || hostnameError(strings.ToLower(prefix), false) != "" || prefix != strings.ToLower(prefix)) {
		return "label key " + quote(k) + " has an invalid prefix" + want
	}
	if len(name) > 63 || !labelNameRe.MatchString(name) {
		return "label key " + quote(k) + " is invalid" + want
	}
	return ""
}

// labelValueError checks a label value (Kubernetes label value grammar:
// empty, or like a label key's name part); "" means valid.
func labelValueError(v string) string {
	if v == "" || len(v) <= 63 && labelNameRe.MatchString(v) {
		return ""
	}
	return "label value " + quote(v) + " is invalid; use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
}

// hostLabelRe is one label of an RFC 1123 hostname (RFC 1123 section 2.1
// relaxes RFC 952 to allow a leading digit), compared case-insensitively.
var hostLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$`)

// hostnameError checks an RFC 1123 hostname: labels of 1 to 63 characters,
// at most 253 in all, no trailing dot. With wildcard, one leading "*." is
// allowed, as nginx's server_name accepts it. "" means valid.
func hostnameError(s string, wildcard bool) string {
	host := s
	if wildcard {
		host = strings.TrimPrefix(s, "*.")
	}
	if host == "" || len(s) > 253 {
		return quote(s) + " is not a valid hostname; use at most 253 characters of dot-separated labels"
	}
	for label := range strings.SplitSeq(host, ".") {
		if len(label) > 63 || !hostLabelRe.MatchString(label) {
			msg := quote(s) + " is not a valid hostname; each dot-separated label has 1 to 63 letters, digits and '-', starting and ending with a letter or digit"
			if wildcard {
				msg += ", and only one leading \"*.\" wildcard is allowed"
			}
			return msg
		}
	}
	return ""
}

// portError checks a TCP port in decimal without sign or leading zeros.
func portError(s string) string {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != s {
		return "port " + quote(s) + " must be a number from 1 to 65535"
	}
	return ""
}

// unixPathRe is the character set of a unix socket path: a deliberately
// small subset of what the kernel allows, with nothing nginx could read as
// syntax. At most 107 bytes (sun_path is 108 with its NUL).
var unixPathRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// addressError checks an upstream server address: "host:port" with an
// RFC 1123 hostname or dotted IPv4 address, "[ipv6]:port" (RFC 3986
// IP-literal without zone), or "unix:/absolute/path". "" means valid.
func addressError(s string) string {
	const want = "; use host:port, [ipv6]:port or unix:/absolute/path"
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if len(p) > 107 || !unixPathRe.MatchString(p) || strings.Contains(p, "..") || path.Clean(p) != p {
			return quote(s) + " is not a valid unix socket address; the path must be absolute and clean, at most 107 characters from A-Z a-z 0-9 . _ / - and contain no \"..\""
		}
		return ""
	}
	if rest, ok := strings.CutPrefix(s, "["); ok {
		ip, port, ok := strings.Cut(rest, "]:")
		if !ok {
			return quote(s) + " is not a valid address" + want
		}
		a, err := netip.ParseAddr(ip)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return quote(s) + " does not hold a valid IPv6 address (zones are not allowed)" + want
		}
		if e := portError(port); e != "" {
			return quote(s) + ": " + e
		}
		return ""
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return quote(s) + " has no port" + want
	}
	host, port := s[:i], s[i+1:]
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return quote(s) + " is not a valid address; write IPv6 addresses in brackets" + want
		}
	} else if looksNumeric(host) {
		return quote(s) + " does not hold a valid IPv4 address" + want
	} else if e := hostnameError(host, false); e != "" {
		return quote(s) + " does not hold a valid hostname or IPv4 address" + want
	}
	if e := portError(port); e != "" {
		return quote(s) + ": " + e
	}
	return ""
}

// looksNumeric reports whether host is made of digits and dots, which a
// resolver would read as an IPv4 address however malformed (RFC 1123 2.1).
func looksNumeric(host string) bool {
	return strings.Trim(host, "0123456789.") == ""
}

// durationRe is an nginx time value in one unit (nginx docs, "Syntax":
// ms, s, m, h, d), at most nine digits so it fits every nginx build.
var durationRe = regexp.MustCompile(`^[0-9]{1,9}(ms|s|m|h|d)$`)

// sizeRe is an nginx size value (nginx docs, "Syntax": bytes, k, m, g),
// at most nine digits.
var sizeRe = regexp.MustCompile(`^[0-9]{1,9}[kKmMgG]?$`)

// prefixPathRe is a location path for prefix and exact matches: "/" then
// RFC 3986 pchar and "/", without the sub-delims that mean something to
// nginx or a shell ("'", ";", "$") and with well-formed %XX escapes. RFC
// 3986 already excludes whitespace, controls, '"', '{', '}', '#' and '\'.
var prefixPathRe = regexp.MustCompile(`^/([A-Za-z0-9\-._~!&()*+,=:@/]|%[0-9A-Fa-f]{2})*$`)

// maxPathLen bounds location paths and regexes.
const maxPathLen = 1024

// regexPathError checks a regex location. The promised grammar is: Go
// regexp (RE2) syntax, which nginx's PCRE also reads the same way for this
// subset; starting with "/" or "^/" so it matches from a path segment; made
// of visible ASCII except the double and single quote, ';', '{', '}', '#'
// and '`' (so no counted repetition: write [0-9][0-9] for [0-9]{2}); '$'
// only as the last character (the end anchor, never a variable); no "(?"
// groups, so no flags and no named captures, which nginx would turn into
// variables.
func regexPathError(s string) string {
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "^/") {
		return "a regex location must start with \"/\" or \"^/\""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return "a regex location may contain only visible ASCII characters, no whitespace"
		case strings.IndexByte("\"';{}#`", c) >= 0:
			return "a regex location may not contain \" ' ; { } # or `; write [0-9][0-9] instead of [0-9]{2}"
		case c == '$' && i != len(s)-1:
			return "\"$\" is allowed only as the last character of a regex location (the end anchor)"
		}
	}
	if strings.Contains(s, "(?") {
		return "\"(?\" groups (flags, named captures) are not allowed in a regex location"
	}
	if _, err := regexp.Compile(s); err != nil {
		return "invalid regular expression: " + strings.TrimPrefix(err.Error(), "error parsing regexp: ")
	}
	return ""
}

// headerNameRe is an RFC 9110 section 5.6.2 token.
var headerNameRe = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")

// maxHeaderName and maxHeaderValue bound header names and values.
const (
	maxHeaderName  = 256
	maxHeaderValue = 4096
)

// headerNameError checks a header field name; "" means valid.
func headerNameError(s string) string {
	if s == "" || len(s) > maxHeaderName || !headerNameRe.MatchString(s) {
		return "header name " + quote(s) + " is invalid; use at most 256 letters, digits and !#$%&'*+-.^_`|~ (an RFC 9110 token)"
	}
	return ""
}

// headerValueError checks a header value: visible ASCII and space
// (RFC 9110 field-vchar, minus obs-text and tabs), with "$" only as the
// start of an allowed variable. "" means valid.
func headerValueError(s string) string {
	if s == "" {
		return "must not be empty; use remove to drop a header"
	}
	if len(s) > maxHeaderValue {
		return "must be at most 4096 bytes"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			return "may contain only visible ASCII characters and spaces"
		}
	}
	return variablesError(s)
}

// allowedVariables are the nginx variables a header value, return body or
// redirect URL may use, besides $http_<name>. Other variables are refused
// because nginx interpolates every "$name" it sees, so a stray "$" could
// leak internal state ($ssl_client_*, $upstream_*) into responses, or not
// work at all.
var allowedVariables = []string{"remote_addr", "host", "request_id", "scheme", "request_uri", "uri", "server_name"}

// IsAllowedVariable reports whether the nginx variable $name may appear in a
// header value, return body or redirect URL. The compiler asks the same
// question again before it writes a value, from this one list.
func IsAllowedVariable(name string) bool {
	return slices.Contains(allowedVariables, name) || (strings.HasPrefix(name, "http_") && len(name) > len("http_"))
}

// DisallowedVariable returns the first nginx variable in s that
// IsAllowedVariable refuses. nginx reads a variable name greedily as
// [A-Za-z0-9_]+ (or in braces, which we do not allow), so "$hostname" is
// $hostname, not $host + "name". The compiler asks it again before it
// writes a value.
func DisallowedVariable(s string) (name string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			continue
		}
		j := i + 1
		for j < len(s) && isVarChar(s[j]) {
			j++
		}
		if name := s[i+1 : j]; !IsAllowedVariable(name) {
			return name, true
		}
		i = j - 1
	}
	return "", false
}

// variablesError checks that every "$" in s starts an allowed variable.
func variablesError(s string) string {
	if _, found := DisallowedVariable(s); found {
		return "\"$\" must start one of the allowed variables $" + strings.Join(allowedVariables, ", $") +
			" or $http_<name>, because nginx would interpolate it (there is no way to write a literal \"$\")"
	}
	return ""
}

func isVarChar(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// hashKeys are the variables an upstream may hash on ("hash" balancing),
// besides $cookie_<name> and $arg_<name> (hashKeyRe). One place, so docs
// and errors agree.
var hashKeys = []string{"$remote_addr", "$request_uri", "$uri", "$host", "$http_x_forwarded_for"}

// hashKeyRe is a cookie or query argument variable with a token name that
// nginx reads whole ([A-Za-z0-9_]).
var hashKeyRe = regexp.MustCompile(`^\$(cookie|arg)_[A-Za-z0-9_]+$`)

func hashKeyAllowed(k string) bool {
	return slices.Contains(hashKeys, k) || hashKeyRe.MatchString(k)
}

// retryConditions are the proxy_next_upstream conditions Retries.On accepts
// (nginx docs, ngx_http_proxy_module; "off" is expressed by tries 1).
var retryConditions = []string{"error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504", "http_403", "http_404", "http_429", "non_idempotent"}

// redirectStatuses are the statuses a return with a URL may use (nginx
// "return code URL" for 301, 302, 303, 307 and 308).
var redirectStatuses = []int{301, 302, 303, 307, 308}

// urlCharsRe is the characters of an RFC 3986 URI reference without "'"
// (so no whitespace, controls, quotes, '\', '{', '}' or non-ASCII), with
// well-formed %XX escapes.
var urlCharsRe = regexp.MustCompile(`^([A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=]|%[0-9A-Fa-f]{2})+$`)

// redirectURLError checks a return URL: an absolute http or https URL with
// a host, or a path starting with "/" (not "//", which browsers read as
// another host). "$" must start an allowed variable, as in
// "https://$host$request_uri". "" means valid.
func redirectURLError(s string) string {
	if len(s) > maxHeaderValue {
		return "must be at most 4096 bytes"
	}
	if !urlCharsRe.MatchString(s) {
		return "must be a URL of RFC 3986 characters: no whitespace, quotes, backslashes, braces or non-ASCII (percent-encode them)"
	}
	switch {
	case strings.HasPrefix(s, "//"):
		return "must be an absolute http(s) URL or a path starting with a single \"/\""
	case strings.HasPrefix(s, "/"):
	default:
		rest, ok := strings.CutPrefix(s, "https://")
		if !ok {
			rest, ok = strings.CutPrefix(s, "http://")
		}
		if !ok {
			return "must be an absolute http:// or https:// URL, or a path starting with \"/\""
		}
		if host, _, _ := strings.Cut(rest, "/"); host == "" || strings.ContainsAny(host[:1], "?#") {
			return "must name a host after the scheme"
		}
	}
	return variablesError(s)
}

// maxBody bounds a return body.
const maxBody = 4096

// bodyError checks a return body: printable UTF-8 (unicode.IsPrint, so no
// controls, no tabs, no format characters) plus "\n", at most 4096 bytes,
// "$" only for allowed variables. "" means valid.
func bodyError(s string) string {
	if len(s) > maxBody {
		return "must be at most 4096 bytes"
	}
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		if r != '\n' && !unicode.IsPrint(r) {
			return "may contain only printable characters and newlines"
		}
	}
	return variablesError(s)
}

// staticRootRe is the character set of a static root directory.
var staticRootRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]*$`)

// staticRootError checks a static root: absolute, clean (path.Clean leaves
// it unchanged), no "..", characters A-Z a-z 0-9 . _ / -. "" means valid.
func staticRootError(s string) string {
	if len(s) > maxPathLen || !staticRootRe.MatchString(s) || strings.Contains(s, "..") || path.Clean(s) != s {
		return "must be an absolute, clean path of at most 1024 characters from A-Z a-z 0-9 . _ / - without \"..\""
	}
	return ""
}

// indexNameRe is a simple file name for an index directive: no directory,
// no leading dot, at most 255 bytes (NAME_MAX).
var indexNameRe = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$`)
