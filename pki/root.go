package pki

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/api"
)

// RegenerateRoot makes a new root token from unseal keys (at least the
// threshold of them), the way `vault operator generate-root` does: Vault
// hands out a one-time pad, each key advances the attempt, and the final
// encoded token is decoded with the pad. An attempt left by an interrupted
// call is cancelled first. Keep the token only as long as needed and revoke
// it afterwards.
func RegenerateRoot(ctx context.Context, client *api.Client, unsealKeys []string) (string, error) {
	sys := client.Sys()
	st, err := sys.GenerateRootStatusWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("generate-root status: %w", err)
	}
	if st.Started {
		if err := sys.GenerateRootCancelWithContext(ctx); err != nil {
			return "", fmt.Errorf("cancel the earlier generate-root attempt: %w", err)
		}
	}
	// With neither an OTP nor a PGP key, Vault generates the OTP and
	// returns it once, here.
	st, err = sys.GenerateRootInitWithContext(ctx, "", "")
	if err != nil {
		return "", fmt.Errorf("start generate-root: %w", err)
	}
	otp, nonce := st.OTP, st.Nonce
	if otp == "" {
		return "", errors.New("start generate-root: vault returned no one-time pad")
	}
	for _, key := range unsealKeys {
		st, err = sys.GenerateRootUpdateWithContext(ctx, key, nonce)
		if err != nil {
			_ = sys.GenerateRootCancelWithContext(context.WithoutCancel(ctx))
			return "", fmt.Errorf("generate-root: provide unseal key: %w", err)
		}
		if st.Complete {
			break
		}
	}
	if !st.Complete {
		_ = sys.GenerateRootCancelWithContext(context.WithoutCancel(ctx))
		return "", fmt.Errorf("generate-root: %d of %d unseal keys given; need the threshold", st.Progress, st.Required)
	}
	encoded := st.EncodedToken
	if encoded == "" {
		encoded = st.EncodedRootToken
	}
	return decodeRootToken(encoded, otp)
}

// decodeRootToken undoes Vault's encoding of a generated root token: base64
// (unpadded) of the token XORed with the one-time pad.
func decodeRootToken(encoded, otp string) (string, error) {
	b, err := base64.RawStdEncoding.DecodeString(encoded)
	if err != nil {
		return "", fmt.Errorf("decode generated root token: %w", err)
	}
	if len(b) != len(otp) {
		return "", fmt.Errorf("decode generated root token: %d bytes, one-time pad has %d", len(b), len(otp))
	}
	for i := range b {
		b[i] ^= otp[i]
	}
	return string(b), nil
}
