// The recovery plans' pages, mounted on the website when plans are configured (plans.ts runs them).
import type { Req, RouteHelpers } from './http-util.js';

export interface PlanRoutes {
  /** Answer `r` if it is a plans page; false if it is not one. */
  route(r: Req, h: RouteHelpers): Promise<boolean>;
}
