// One info line per request, not two, and none for routes whose success says nothing new: VA Notify's
// callbacks (the state machine logs one line per callback with its outcome), health probes and
// metrics scrapes. At their rates, per-request log lines were a large share of the callback cost.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

const QuietWhenSuccessful = new Set(['/v1/va-notify/callbacks', '/health/live', '/health/ready', '/metrics']);

export class RequestLogController extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    if (this.isLogDisabled(request)) return;
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return;
    const details = { req: request, res: reply, responseTime: reply.elapsedTime };
    if (error) reply.log.error({ ...details, err: error }, 'request errored');
    else if (reply.statusCode < 400 && QuietWhenSuccessful.has(request.routeOptions.url ?? ''))
      reply.log.debug(details, 'request completed');
    else reply.log.info(details, 'request completed');
  }
}
