// The MSK IAM token: a SigV4-presigned kafka-cluster:Connect URL, valid 15 minutes. Kept until a
// minute before it expires, so that each (re-)authentication the broker asks for gets a live one.

export const TokenRefreshMarginMs = 60_000;

export function mskIamTokenProvider(options: { region: string; roleArn?: string }, now = () => Date.now()): () => Promise<string> {
  let cached: { token: string; expiryTime: number } | undefined;
  return async () => {
    if (cached === undefined || cached.expiryTime - now() < TokenRefreshMarginMs) {
      // Loaded on first use: the AWS SDK it brings costs memory that an instance without MSK IAM
      // (no event bus, or another mechanism) should not pay.
      const { generateAuthToken, generateAuthTokenFromRole } = await import('aws-msk-iam-sasl-signer-js');
      cached =
        options.roleArn === undefined
          ? await generateAuthToken({ region: options.region })
          : await generateAuthTokenFromRole({
              region: options.region,
              awsRoleArn: options.roleArn,
              awsRoleSessionName: 'rx-tracking-email',
            });
    }
    return cached.token;
  };
}
