-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "cacheKey" TEXT,
ADD COLUMN     "cachedFromId" TEXT,
ADD COLUMN     "contextDeletedAt" TIMESTAMP(3),
ADD COLUMN     "platform" TEXT,
ADD COLUMN     "purgedAt" TIMESTAMP(3);

-- CreateIndex
CREATE INDEX "Build_projectId_cacheKey_idx" ON "Build"("projectId", "cacheKey");

-- CreateIndex
CREATE INDEX "Build_cachedFromId_idx" ON "Build"("cachedFromId");

-- CreateIndex
CREATE INDEX "Build_status_finishedAt_idx" ON "Build"("status", "finishedAt");

-- CreateIndex
CREATE INDEX "Build_artifactKey_idx" ON "Build"("artifactKey");

-- CreateIndex
CREATE INDEX "Build_contextKey_createdAt_idx" ON "Build"("contextKey", "createdAt");

-- AddForeignKey
ALTER TABLE "Build" ADD CONSTRAINT "Build_cachedFromId_fkey" FOREIGN KEY ("cachedFromId") REFERENCES "Build"("id") ON DELETE SET NULL ON UPDATE CASCADE;

