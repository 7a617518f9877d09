package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// OpenPGP packet tags (RFC 4880, 4.3) that a key file starts with.
const (
	pgpTagSecretKey = 5
	pgpTagPublicKey = 6
)

// pgpKey turns one pgp_keys value into what Vault's sys/init takes: the
// binary public key, base64-encoded. The value is a key (ASCII-armored or
// base64, e.g. from file()) or the path of a file holding one (armored,
// base64 or binary, as `gpg --export` writes it), relative to dir.
//
// Only the form is checked here, not the key material: Vault parses the
// keys at init and names the one it cannot use. Checking the packet type
// still catches the mistakes that matter before anything runs: a file that
// is no key at all, and a secret key given where the public one belongs.
func pgpKey(value, dir string) (string, error) {
	v := strings.TrimSpace(value)
	if strings.HasPrefix(v, "keybase:") {
		return "", errors.New("keybase: keys are not fetched (bootstrap needs no network for this); export the key to a file and give its path")
	}
	if key, ok, err := parsePGPKey([]byte(v)); ok {
		return key, err
	}
	path := v
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return "", fmt.Errorf("cannot read %s: %w", v, err)
	}
	key, ok, err := parsePGPKey(b)
	if !ok {
		return "", fmt.Errorf("%s holds no PGP public key; export one with `gpg --export --armor KEYID > FILE`", v)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", v, err)
	}
	return key, nil
}

// parsePGPKey recognises an OpenPGP key, armored, base64 or binary. ok is
// false when b is none of these (a path, say); err tells what is wrong
// with something that is one of them.
func parsePGPKey(b []byte) (key string, ok bool, err error) {
	s := strings.TrimSpace(string(b))
	var raw []byte
	switch {
	case strings.HasPrefix(s, "-----BEGIN PGP"):
		if raw, err = dearmor(s); err != nil {
			return "", true, err
		}
	case len(b) > 0 && b[0]&0x80 != 0:
		// Binary: text never has the high bit set in its first byte.
		raw = b
	default:
		d, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return "", false, nil
		}
		// Short words and paths can be valid base64 too; only a whole
		// packet counts as a key.
		if tag, err := firstPacketTag(d); err != nil || (tag != pgpTagPublicKey && tag != pgpTagSecretKey) {
			return "", false, nil
		}
		raw = d
	}
	tag, err := firstPacketTag(raw)
	if err != nil {
		return "", true, err
	}
	switch tag {
	case pgpTagPublicKey:
		return base64.StdEncoding.EncodeToString(raw), true, nil
	case pgpTagSecretKey:
		return "", true, errors.New("this is a secret key; give the public key (`gpg --export`, not --export-secret-keys) and keep the secret one away from bootstrap")
	}
	return "", true, fmt.Errorf("OpenPGP data of packet type %d, not a public key", tag)
}

// firstPacketTag returns the tag of the OpenPGP packet raw starts with,
// after checking that the packet's length fits in raw.
func firstPacketTag(raw []byte) (int, error) {
	bad := errors.New("not OpenPGP data")
	if len(raw) < 2 || raw[0]&0x80 == 0 {
		return 0, bad
	}
	var tag, hdr, n int
	if raw[0]&0x40 != 0 {
		// New format: tag in the low six bits, then a one, two or five
		// octet length.
		tag = int(raw[0] & 0x3f)
		switch l := int(raw[1]); {
		case l < 192:
			hdr, n = 2, l
		case l < 224:
			if len(raw) < 3 {
				return 0, bad
			}
			hdr, n = 3, (l-192)<<8+int(raw[2])+192
		case l == 255:
			if len(raw) < 6 {
				return 0, bad
			}
			hdr, n = 6, int(raw[2])<<24|int(raw[3])<<16|int(raw[4])<<8|int(raw[5])
		default:
			return 0, bad // partial lengths are for data, never keys
		}
	} else {
		// Old format: tag in bits 5-2, length type in bits 1-0.
		tag = int(raw[0]>>2) & 0x0f
		switch raw[0] & 3 {
		case 0:
			hdr, n = 2, int(raw[1])
		case 1:
			if len(raw) < 3 {
				return 0, bad
			}
			hdr, n = 3, int(raw[1])<<8|int(raw[2])
		case 2:
			if len(raw) < 5 {
				return 0, bad
			}
			hdr, n = 5, int(raw[1])<<24|int(raw[2])<<16|int(raw[3])<<8|int(raw[4])
		default:
			return 0, bad
		}
	}
	if n == 0 || hdr+n > len(raw) {
		return 0, bad
	}
	return tag, nil
}

// dearmor decodes an ASCII-armored public key block (RFC 4880, 6.2).
func dearmor(s string) ([]byte, error) {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	const begin, end = "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----"
	first := strings.TrimSpace(lines[0])
	if first != begin {
		if strings.Contains(first, "PRIVATE KEY") {
			return nil, errors.New("this is a secret key; give the public key (`gpg --export --armor`, not --export-secret-keys) and keep the secret one away from bootstrap")
		}
		return nil, fmt.Errorf("armored %q is not a public key block", strings.Trim(first, "- "))
	}
	i := 1
	// Armor headers ("Comment: ...") come first, up to a blank line.
	for i < len(lines) && strings.Contains(lines[i], ": ") {
		i++
	}
	var body strings.Builder
	var sum string
	closed := false
	for ; i < len(lines) && !closed; i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == end:
			closed = true
		case len(l) == 5 && l[0] == '=':
			sum = l[1:] // base64 lines never start with '='
		default:
			body.WriteString(l)
		}
	}
	if !closed {
		return nil, errors.New("the armored key has no " + end + " line; was it cut off?")
	}
	raw, err := base64.StdEncoding.DecodeString(body.String())
	if err != nil {
		return nil, fmt.Errorf("the armored key is damaged: %w", err)
	}
	if sum != "" {
		want, err := base64.StdEncoding.DecodeString(sum)
		if err != nil || len(want) != 3 || uint32(want[0])<<16|uint32(want[1])<<8|uint32(want[2]) != crc24(raw) {
			return nil, errors.New("the armored key is damaged: its checksum does not match")
		}
	}
	return raw, nil
}

// crc24 is the armor checksum (RFC 4880, 6.1).
func crc24(b []byte) uint32 {
	crc := uint32(0xb704ce)
	for _, c := range b {
		crc ^= uint32(c) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= 0x1864cfb
			}
		}
	}
	return crc & 0xffffff
}
