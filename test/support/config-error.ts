// The message a bad configuration stops startup with.
import { ConfigError } from '../../src/config.ts';

export function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  throw new Error('expected a ConfigError');
}
