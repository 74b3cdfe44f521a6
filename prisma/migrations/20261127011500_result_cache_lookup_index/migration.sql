-- DropIndex
DROP INDEX "Build_projectId_cacheKey_idx";

-- CreateIndex
CREATE INDEX "Build_projectId_cacheKey_status_platform_finishedAt_idx" ON "Build"("projectId", "cacheKey", "status", "platform", "finishedAt");

