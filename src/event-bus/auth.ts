// The MSK IAM token: a SigV4-presigned kafka-cluster:Connect URL, valid 15 minutes. Kept until a
// minute before it expires, so that each (re-)authentication the broker asks for gets a live one.
import { generateAuthToken, generateAuthTokenFromRole } from 'aws-msk-iam-sasl-signer-js';

export const TokenRefreshMarginMs = 60_000;

export function mskIamTokenProvider(options: { region: string; roleArn?: string }, now = () => Date.now()): () => Promise<string> {
  let cached: { token: string; expiryTime: number } | undefined;
  return async () => {
    if (cached === undefined || cached.expiryTime - now() < TokenRefreshMarginMs) {
      cached = options.roleArn === undefined
        ? await generateAuthToken({ region: options.region })
        : await generateAuthTokenFromRole({ region: options.region, awsRoleArn: options.roleArn, awsRoleSessionName: 'rx-tracking-email' });
    }
    return cached.token;
  };
}
