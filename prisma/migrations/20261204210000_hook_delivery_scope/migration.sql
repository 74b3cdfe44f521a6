-- Push deliveries are deduplicated per scope (the projects whose triggers verified them).
-- AlterTable
ALTER TABLE "HookDelivery" ADD COLUMN     "scope" TEXT NOT NULL DEFAULT '';

-- DropIndex
DROP INDEX "HookDelivery_provider_deliveryId_key";

-- CreateIndex
CREATE UNIQUE INDEX "HookDelivery_provider_scope_deliveryId_key" ON "HookDelivery"("provider", "scope", "deliveryId");
